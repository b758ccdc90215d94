"""CDI, the Container Device Interface: devices named vendor.com/class=name, described by spec
files (JSON or YAML) that device drivers write into /etc/cdi and /var/run/cdi.

names reads what a container asks for (ContainerConfig.cdi_devices and the cdi.k8s.io/*
annotations device plugins send); specfile reads and checks one spec file; edits holds the
containerEdits of a spec and of its devices and merges those a container gets; registry finds
the devices in the configured directories and resolves a request against the host. The OCI
spec rule that applies the result is cri_shim.oci.cdi.
"""
