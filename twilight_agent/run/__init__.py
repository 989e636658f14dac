"""The run layer: one ``DeployRun`` carried out through the ports, in one direction (the
runner, its step handlers, the journal's recovery at start-up, the record it leaves).
It never imports the Agent, the settings or an entry point."""
