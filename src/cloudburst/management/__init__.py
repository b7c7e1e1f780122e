"""The management service: a live view of the cluster and the policies that scale functions and nodes.

:mod:`~cloudburst.management.policy` holds the scaling rules as pure, deterministic code;
:mod:`~cloudburst.management.state` keeps the cluster view and turns events into scaling instructions. Neither
does I/O: :mod:`~cloudburst.management.server` feeds them reports and ticks, answers the executor- and
scheduler-list queries and carries out what they decide through a provisioner; schedulers and executors ask for
the scheduler list through :mod:`~cloudburst.management.client`. See ``docs/management.md``.
"""
