"""Import paths kept from the original package layout, so existing Cloudburst programs run unchanged."""
