"""``kubectl miosa``: the seed's version endpoints as a kubectl plugin.

The Kubernetes API server is the database, so the plugin is a thin client over our custom
resources: it lists and shows DeploymentVersions in the seed's JSON shape, patches
``spec.promotedVersion`` to promote or roll back, prints promotion history and build logs.
It never decides promotability itself: the admission webhook is the single judge, and the
plugin only relays its message.

Modules:

* ``cli``: argparse, global flags, dispatch, exit codes.
* ``commands``: one function per command, composed of the pieces below.
* ``client``: the cluster gateway (official ``kubernetes`` client) that turns every API or
  transport failure into a ``PluginError`` with an exit code.
* ``selection``: label/field selectors, attribution filtering, rollback target choice.
* ``output``: the seed shape, tables, JSON/YAML.
* ``errors``: exit codes and the mapping from exceptions to messages.
"""
