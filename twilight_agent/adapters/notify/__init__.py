"""Where events go: the journal, the node_exporter textfile, the webhook and Apprise,
delivered off the deploy path."""
