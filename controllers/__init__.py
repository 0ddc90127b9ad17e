"""Decision core and the live control loop: snapshot -> decide -> actuators."""
