"""Images: registry pulls, the content store, layer unpacking, image records and overlay rootfs.

The pieces, each in its own module:
- reference: image names as kubelet and containerd normalise them;
- content: blobs by digest, written through a verifying ingest;
- registry, auth, manifest: the registry HTTP API v2 client (auth, mirrors, platform choice);
- layers, unpacker, tarapply, lowers: layers unpacked once each, by a confined helper (a fork server);
- records, imageconfig, store: image records keyed by config digest, names, disk usage;
- pull, importer: getting images into the store from a registry or a tarball;
- rootfs: the overlay root filesystems containers run on (usage: their disk use);
- flight: concurrent requests for the same thing share one piece of work.
"""
