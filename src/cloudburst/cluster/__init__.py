"""Running a deployment's roles as processes on one machine: child processes, supervision, local clusters."""
