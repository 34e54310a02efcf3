"""Serving over openpi's websocket protocol: the server, the torch policy, observation mappings, msgpack.

Nothing is imported here: `server`, `obs_mapping` and `msgpack_numpy` need no torch (the onnxruntime backend
runs them on machines without it); only `policy` imports torch.
"""
