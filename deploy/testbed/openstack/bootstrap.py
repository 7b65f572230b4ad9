#!/usr/bin/python3
"""Idempotent bootstrap of Canopy's OpenStack testbed, run by up.sh.

  bootstrap.py identity   -> domain, projects, users, roles, services, endpoints
  bootstrap.py resources  -> flavors, per-project quotas, shared network, image

Two projects stand for two clouds in multi-cloud tests:

  canopy-a  domain Default, user canopy-a, roomy quotas
  canopy-b  domain canopy,  user canopy-b, small quotas (quota tests)

Reads $OSTB_DIR/testbed.env for passwords and quotas. Uses openstacksdk from
Debian (python3-openstacksdk 0.101) in one process, which is much faster than
tens of `openstack` CLI calls.
"""
import io
import os
import sys

import openstack

BASE = os.environ.get("OSTB_DIR", "/var/lib/canopy-testbed/openstack")
IP = "127.0.0.1"
ENV = {}
with open(os.path.join(BASE, "testbed.env")) as f:
    for line in f:
        line = line.strip()
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            ENV[k] = v

SERVICES = [
    # name, type, url, service user
    ("glance", "image", f"http://{IP}:9292", "glance"),
    ("placement", "placement", f"http://{IP}:8778", "placement"),
    ("nova", "compute", f"http://{IP}:8774/v2.1", "nova"),
    ("neutron", "network", f"http://{IP}:9696", "neutron"),
]

FLAVORS = [  # name, vcpus, ram MiB, disk GiB
    ("m1.tiny", 1, 512, 1),
    ("m1.small", 1, 2048, 20),
    ("m1.medium", 2, 4096, 40),
    ("b8", 8, 16384, 80),
    # More disk than the fake compute node has (600000 GiB): every boot of
    # this flavor ends in ERROR with "No valid host was found." Disk is not
    # a Nova quota, so the boot itself is accepted.
    ("canopy.nohost", 1, 512, 1000000),
]

# project, domain, user, password key, quotas
PROJECTS = [
    ("canopy-a", "default", "canopy-a", "A_PASS", {
        "instances": int(ENV.get("A_QUOTA_INSTANCES", "100")),
        "cores": int(ENV.get("A_QUOTA_CORES", "800")),
        "ram": int(ENV.get("A_QUOTA_RAM_MB", "1638400")),
    }),
    ("canopy-b", "canopy", "canopy-b", "B_PASS", {
        "instances": int(ENV.get("B_QUOTA_INSTANCES", "3")),
        "cores": int(ENV.get("B_QUOTA_CORES", "4")),
        "ram": int(ENV.get("B_QUOTA_RAM_MB", "8192")),
    }),
]
NETWORK = "canopy-net"
IMAGE = "canopy-tiny"


def admin_conn():
    return openstack.connect(
        auth_url=f"http://{IP}:5000/v3", username="admin",
        password=ENV["ADMIN_PASS"], project_name="admin",
        user_domain_name="Default", project_domain_name="Default",
        region_name="RegionOne", identity_api_version="3",
        load_yaml_config=False, load_envvars=False)


def ensure_domain(c, name):
    if name == "default":
        return c.identity.get_domain("default")
    d = c.identity.find_domain(name, ignore_missing=True)
    if d is None:
        d = c.identity.create_domain(name=name, description="Canopy testbed domain")
        print("created domain", name)
    return d


def ensure_project(c, name, domain, desc):
    p = c.identity.find_project(name, domain_id=domain.id, ignore_missing=True)
    if p is None:
        p = c.identity.create_project(name=name, domain_id=domain.id, description=desc)
        print("created project", name)
    return p


def ensure_user(c, name, password, domain, project):
    u = c.identity.find_user(name, domain_id=domain.id, ignore_missing=True)
    if u is None:
        u = c.identity.create_user(name=name, password=password, domain_id=domain.id,
                                   default_project_id=project.id)
        print("created user", name)
    else:
        c.identity.update_user(u, password=password)
    return u


def grant(c, user, project, role_name):
    role = c.identity.find_role(role_name)
    c.grant_role(role.id, user=user.id, project=project.id)


def identity():
    c = admin_conn()
    default = ensure_domain(c, "default")
    service_p = ensure_project(c, "service", default, "OpenStack service users")
    for pname, dname, uname, pw, _ in PROJECTS:
        d = ensure_domain(c, dname)
        p = ensure_project(c, pname, d, "Canopy test cloud " + pname)
        u = ensure_user(c, uname, ENV[pw], d, p)
        grant(c, u, p, "member")
        grant(c, u, p, "reader")
    existing = {s.type: s for s in c.identity.services()}
    for name, stype, url, user in SERVICES:
        u = ensure_user(c, user, ENV["SERVICE_PASS"], default, service_p)
        grant(c, u, service_p, "admin")
        svc = existing.get(stype) or c.identity.create_service(
            name=name, type=stype, description=f"{name} ({stype})", is_enabled=True)
        have = {e.interface for e in c.identity.endpoints(service_id=svc.id)}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                c.identity.create_endpoint(service_id=svc.id, interface=iface, url=url,
                                           region_id="RegionOne")
                print("created endpoint", name, iface, url)
    print("identity ok")


def resources():
    c = admin_conn()
    out = []
    for name, vcpus, ram, disk in FLAVORS:
        f = c.compute.find_flavor(name, ignore_missing=True)
        if f is None:
            f = c.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk,
                                        is_public=True)
            print("created flavor", name)
        out.append(f"# flavor {name}: {vcpus} vCPU, {ram} MiB RAM, {disk} GiB disk (id {f.id})")
    for pname, dname, _, _, quotas in PROJECTS:
        d = ensure_domain(c, dname)
        p = c.identity.find_project(pname, domain_id=d.id)
        c.set_compute_quotas(p.id, **quotas)
        out.append(f"# {pname} compute quotas: " + ", ".join(f"{k}={v}" for k, v in quotas.items()))
    net = c.network.find_network(NETWORK, ignore_missing=True)
    if net is None:
        net = c.network.create_network(
            name=NETWORK, is_shared=True, provider_network_type="flat",
            provider_physical_network="physnet1")
        print("created network", NETWORK)
    if not list(c.network.subnets(network_id=net.id)):
        # TEST-NET-1 documentation range: the addresses exist only in Neutron's DB.
        c.network.create_subnet(network_id=net.id, name=NETWORK + "-subnet", ip_version=4,
                                cidr="192.0.2.0/24", gateway_ip=None, is_dhcp_enabled=False)
        print("created subnet 192.0.2.0/24")
    out.append(f"# shared network {NETWORK} (id {net.id}), subnet 192.0.2.0/24, no DHCP")
    img = c.image.find_image(IMAGE, ignore_missing=True)
    if img is not None and img.status != "active":
        c.image.delete_image(img)
        img = None
    if img is None:
        # 1 MiB of zeros: Nova needs an active image; the fake driver never reads it.
        img = c.image.create_image(name=IMAGE, data=io.BytesIO(b"\0" * (1 << 20)),
                                   disk_format="raw", container_format="bare",
                                   visibility="public", wait=True, timeout=120)
        print("created image", IMAGE)
    out.append(f"# public image {IMAGE} (id {img.id}), raw, 1 MiB")
    with open(os.path.join(BASE, "bootstrap-summary.txt"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    {"identity": identity, "resources": resources}[sys.argv[1]]()
