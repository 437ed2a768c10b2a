"""fuelswitch.v1: generated at build time from the .proto files beside this file."""
