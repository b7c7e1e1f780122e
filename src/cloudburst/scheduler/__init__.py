"""The scheduler: registrations, DAG pinning and placement of calls (pure core in ``state``/``policy``)."""
