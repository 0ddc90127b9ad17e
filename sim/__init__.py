"""Discrete-event simulator of an inference fleet that replays traces through controllers/."""
