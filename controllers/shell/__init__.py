"""The I/O shell around the core: the control loop, sources, actuators, leader election, config."""
