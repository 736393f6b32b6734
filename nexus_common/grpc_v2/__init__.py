"""The Open Inference Protocol over gRPC: the `.proto` (inference.proto), the modules
generated from it (`make proto`; committed, so installing needs no compiler), and the
conversion between its messages and `nexus_common.v2wire`'s tensors, shared by the proxy
and the model server."""
