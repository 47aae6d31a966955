"""The tunedex library: everything stages, flows and the CLI share. Never imports a stage."""
