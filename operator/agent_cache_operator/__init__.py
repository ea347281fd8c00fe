"""The agent-cache Kubernetes operator: ``AgentCache`` resources become live cache configuration in Valkey.

Modules, bottom up (each imports only from modules listed before it):

- ``bundle`` (the observability bundle's dashboards and rule templates) and ``crd`` (the CustomResourceDefinition:
  schema, defaults, CEL rules, printer columns, as data);
- ``spec``: a resource's spec checked and typed (pure);
- ``kube``: the operator's own Kubernetes API calls (Secrets, children, discovery), plain dicts, never PUT;
- ``status`` and ``children``: conditions and live stats; the dashboards ConfigMap, GrafanaDashboards and
  PrometheusRule to deploy, and the patches that update them (pure);
- ``connection`` and ``metrics``: Valkey clients from the spec and its Secrets; the operator's own metrics;
- ``reconcile``: the I/O in order for one resource, returning a status patch, Events and a verdict;
- ``handlers``: thin Kopf handlers over ``reconcile``; ``cli``: the ``agent-cache-operator`` command.

See docs/operator.md.
"""
