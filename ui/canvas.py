"""The entity page's node-link canvas (placeholder; being built)."""
