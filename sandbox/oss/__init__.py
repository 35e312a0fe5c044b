"""OSS emulation: the OSS REST API over loopback for oss2 and other OSS clients.

Modules, one concern each (in the manner of moto): ``state`` (buckets, objects, uploads in SQLite + files),
``wire`` (request targets, query, dates, ranges), ``xml`` (documents in and out), ``auth`` (V1/V2/V4 signatures),
``errors`` (codes, statuses, error documents), ``streams`` (bodies to and from disk), ``crc`` (CRC-64/ECMA),
``routes`` (the operations), ``models`` (shapes of the in-process API), ``service`` (the ASGI app and that API).
"""
