"""What the roles tell people about themselves: Prometheus metrics (:mod:`.metrics`) and trace hops sent to the
management service (:mod:`.reporter`)."""
