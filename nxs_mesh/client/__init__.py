"""What agents embed: the ``Mesh`` facade, consumers and their delivery policy, the outbox, dead letters.
Above ``transport``: never imports nats-py."""
