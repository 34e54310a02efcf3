"""Serving over openpi's websocket protocol: the server, the served-policy base, the torch policy, observation
mappings, msgpack.

Nothing is imported here: `server`, `served_policy`, `obs_mapping` and `msgpack_numpy` need no torch (the
onnxruntime backend runs them on machines without it); only `policy` (the torch backend) imports torch.
"""
