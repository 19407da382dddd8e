"""The gateway: gRPC (and later HTTP) API over NATS JetStream. Stateless; imports no torch."""
