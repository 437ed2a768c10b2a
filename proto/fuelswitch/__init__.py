"""fuelswitch public contract: generated protobuf/gRPC modules live in v1/ (built, not committed)."""
