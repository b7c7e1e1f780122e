"""The management service: a live view of the cluster and the policies that scale functions and nodes.

:mod:`~cloudburst.management.policy` holds the scaling rules as pure, deterministic code;
:mod:`~cloudburst.management.state` keeps the cluster view and turns events into scaling instructions. Neither
does I/O: a server feeds them reports and ticks and carries out what they decide.
"""
