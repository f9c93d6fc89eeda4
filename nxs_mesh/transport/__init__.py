"""The only rooms that import nats-py: connections, the lean publisher, the pull protocol, replay,
stream and bucket assets, the nats-server runner, and the translation of nats-py's errors."""
