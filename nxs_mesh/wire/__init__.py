"""The public contract (DESIGN.md sections 3 and 4): envelope, subjects, content schemas, and the
one error tree. A leaf: it imports nothing else of the mesh, and nothing of nats-py."""
