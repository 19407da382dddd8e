"""The NATS JetStream bus: streams, KV buckets and the object store every process shares."""
