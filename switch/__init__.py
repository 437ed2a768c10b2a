"""fuelswitch: the gRPC host (PosGateway, CardAdmin, Clearing) around the compiled core."""
