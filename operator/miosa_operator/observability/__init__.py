"""Operating the operator: Prometheus metrics, structured logs and the journal that feeds both.

Design decisions:

* **Observed from the outside.** The controllers hold the product's decisions and stay free
  of instrumentation: what they *write* is observed instead.  ``journal`` wraps the ``Kube``
  gateway handed to them and turns every status write that matters (a version's state, a
  rollout starting or ending, artifacts collected) into an info log line and metric
  samples; ``census`` counts versions from kopf's watch stream; ``instrument`` wraps the
  ingestion step, the collector and the admission handlers.  A controller can be rewritten
  without touching this package, and a unit test of this package fails if what it observes
  stops being written.
* **Bounded labels.** With a thousand tenants, a label per namespace, Deployment or version
  would make a time series per object.  Labels carry only values from closed sets (states,
  kinds, actions, outcomes, condition reasons from ``api.conditions``); which object it was
  is in the log line, which carries namespace, name and version id.
* **Context, not arguments.** The kopf handler wrapper puts the object being reconciled in a
  context variable (``context``); the log filter adds its identity to every line logged
  while it is handled, including lines from libraries.
"""
