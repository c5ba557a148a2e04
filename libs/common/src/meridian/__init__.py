"""Generated protobuf contracts (see proto/). Do not edit."""
