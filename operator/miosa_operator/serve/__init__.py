"""Static releases from the store to an end-customer's browser.

* ``artifacts``: the operator's artifact endpoint (tenant pods download their own tenant's
  releases with their ServiceAccount token; the store's credentials stay in the operator).
* ``client`` and ``fetch``: the static pods' init container (download from that endpoint,
  verify the sha256 and every member, unpack into an emptyDir).
* ``server``: the static pods' server (serves that tree to end-customers).

The submodules are imported where needed: the init container must not pay for aiohttp or
the Kubernetes client, nor the server for boto3.
"""
