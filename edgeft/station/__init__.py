"""The inspection station: the camera process as a line runs it (``edgeft infer``).

Where each piece is, by what it does:
- ``run``: the station assembled from ``edgeft infer``'s options, refused in one line before the first frame when
  something cannot work, and the exit status a supervisor acts on;
- ``streams``: several cameras through one model session, each at its own pace, a slow or lost one never holding up
  the others;
- ``mqtt``: every decision to the line's broker (QoS 1, buffered while the broker is away);
- ``opcua``: each stream's latest decision and part number written to a PLC's OPC UA variables;
- ``evidence``: the rejected and reviewed parts kept (PNG and a JSON sidecar) within a disk cap, for audit and
  relabelling;
- ``swap``: a new model loaded, checked and swapped in between frames.
The probes (``/healthz``, ``/readyz``) are served beside ``/metrics`` by :mod:`edgeft.runtime.monitor`.
"""
