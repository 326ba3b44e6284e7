import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  CgroupV1,
  CgroupV2,
  cgroupManagerFor,
  cgroupRelativePath,
  parseCgroupMounts,
  sharesToWeight,
} from "../../src/container/cgroups.js";

const MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

function tempRoot(): string {
  return mkdtempSync(join(tmpdir(), "vessel-cg-"));
}
const read = (p: string) => readFileSync(p, "utf8");

test("cgroup mounts are read from mountinfo, v1 controllers and the v2 hierarchy", () => {
  const m = parseCgroupMounts(MOUNTINFO);
  assert.deepEqual(
    m.filter((x) => x.version === 1).map((x) => x.controllers.join(",")),
    ["cpu", "cpuset", "memory", "pids", "freezer", "devices", "name=systemd"],
  );
  assert.equal(m.find((x) => x.version === 2)?.mountpoint, "/sys/fs/cgroup/unified");
});

test("a host with v1 controllers gets the v1 manager even with a v2 mount beside them", () => {
  const mgr = cgroupManagerFor("/a/b", parseCgroupMounts(MOUNTINFO));
  assert.equal(mgr.record.version, 1);
  assert.equal(mgr.record.paths.memory, "/sys/fs/cgroup/memory/a/b");
  assert.equal(mgr.record.paths["name=systemd"], "/sys/fs/cgroup/systemd/a/b");
});

test("cgroupsPath: default, absolute, relative, systemd slice form, and no escapes", () => {
  assert.equal(cgroupRelativePath(undefined, "c1", false), "/vessel-runc/c1");
  assert.equal(cgroupRelativePath("/libpod_parent/libpod-x", "c1", false), "/libpod_parent/libpod-x");
  assert.equal(cgroupRelativePath("mine/c1", "c1", false), "/mine/c1");
  assert.equal(cgroupRelativePath("machine.slice:libpod:abc", "c1", true), "/machine.slice/libpod-abc.scope");
  assert.equal(cgroupRelativePath("a-b.slice:pfx:n", "c1", true), "/a.slice/a-b.slice/pfx-n.scope");
  assert.throws(() => cgroupRelativePath("/../../etc", "c1", false), /must not contain/);
});

test("cgroup v1: create fills the cpuset from the parent and apply writes each controller's files", () => {
  const root = tempRoot();
  try {
    const mounts = ["cpu", "cpuset", "memory", "pids", "blkio", "devices", "freezer"].map((c) => ({
      mountpoint: join(root, c),
      controllers: [c],
      version: 1 as const,
    }));
    mkdirSync(join(root, "cpuset"), { recursive: true });
    writeFileSync(join(root, "cpuset/cpuset.cpus"), "0-3\n");
    writeFileSync(join(root, "cpuset/cpuset.mems"), "0\n");
    mkdirSync(join(root, "memory/ct"), { recursive: true });
    writeFileSync(join(root, "memory/ct/memory.memsw.limit_in_bytes"), "");
    const mgr = new CgroupV1(mounts, "/ct");
    mgr.create();
    assert.equal(read(join(root, "cpuset/ct/cpuset.cpus")), "0-3");
    assert.equal(read(join(root, "cpuset/ct/cpuset.mems")), "0");
    mgr.apply({
      memory: { limit: 64 << 20, swap: 128 << 20, reservation: 32 << 20 },
      cpu: { shares: 512, quota: 50000, period: 100000, cpus: "1" },
      pids: { limit: 42 },
      devices: [
        { allow: false, access: "rwm" },
        { allow: true, type: "c", major: 1, minor: 3, access: "rwm" },
        { allow: true, type: "c", major: 136, minor: null, access: "rwm" },
      ],
    });
    assert.equal(read(join(root, "memory/ct/memory.limit_in_bytes")), String(64 << 20));
    assert.equal(read(join(root, "memory/ct/memory.memsw.limit_in_bytes")), String(128 << 20));
    assert.equal(read(join(root, "memory/ct/memory.soft_limit_in_bytes")), String(32 << 20));
    assert.equal(read(join(root, "cpu/ct/cpu.shares")), "512");
    assert.equal(read(join(root, "cpu/ct/cpu.cfs_quota_us")), "50000");
    assert.equal(read(join(root, "cpu/ct/cpu.cfs_period_us")), "100000");
    assert.equal(read(join(root, "cpuset/ct/cpuset.cpus")), "1");
    assert.equal(read(join(root, "pids/ct/pids.max")), "42");
    assert.equal(read(join(root, "devices/ct/devices.deny")), "a");
    assert.equal(read(join(root, "devices/ct/devices.allow")), "c 136:* rwm", "the last rule written");
    assert.deepEqual(mgr.procsFiles().sort()[0], join(root, "blkio/ct/cgroup.procs"));
    mgr.freeze();
    assert.equal(read(join(root, "freezer/ct/freezer.state")), "FROZEN");
    assert.equal(mgr.frozen(), true);
    mgr.thaw();
    assert.equal(mgr.frozen(), false);
    writeFileSync(join(root, "pids/ct/cgroup.procs"), "10\n11\n");
    assert.deepEqual(mgr.pids(), [10, 11]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("cgroup v1: pids.max of zero means unlimited, and unified keys are refused", () => {
  const root = tempRoot();
  try {
    const mgr = new CgroupV1([{ mountpoint: join(root, "pids"), controllers: ["pids"], version: 1 }], "/ct");
    mgr.create();
    mgr.apply({ pids: { limit: 0 } });
    assert.equal(read(join(root, "pids/ct/pids.max")), "max");
    assert.throws(() => mgr.apply({ unified: { "memory.high": "1" } }), /needs cgroup v2/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("cgroup v2: controllers are enabled down the path and limits use the v2 files", () => {
  const root = tempRoot();
  try {
    writeFileSync(join(root, "cgroup.controllers"), "cpuset cpu io memory pids\n");
    mkdirSync(join(root, "pod"), { recursive: true });
    const mgr = new CgroupV2(root, "/pod/ct");
    mgr.create();
    assert.equal(read(join(root, "cgroup.subtree_control")), "+cpuset +cpu +io +memory +pids");
    assert.equal(read(join(root, "pod/cgroup.subtree_control")), "+cpuset +cpu +io +memory +pids");
    mgr.apply({
      memory: { limit: 64 << 20, swap: 96 << 20, reservation: 1 << 20 },
      cpu: { shares: 1024, quota: 25000, period: 100000 },
      pids: { limit: 7 },
      blockIO: { weight: 500, throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1000 }] },
      unified: { "memory.high": "50000000" },
    });
    const d = join(root, "pod/ct");
    assert.equal(read(join(d, "memory.max")), String(64 << 20));
    assert.equal(read(join(d, "memory.swap.max")), String(32 << 20), "OCI swap counts memory too");
    assert.equal(read(join(d, "memory.low")), String(1 << 20));
    assert.equal(read(join(d, "cpu.weight")), String(sharesToWeight(1024)));
    assert.equal(read(join(d, "cpu.max")), "25000 100000");
    assert.equal(read(join(d, "pids.max")), "7");
    assert.equal(read(join(d, "io.max")), "8:0 rbps=1000");
    assert.equal(read(join(d, "io.weight")), "default 4950");
    assert.equal(read(join(d, "memory.high")), "50000000");
    assert.throws(() => mgr.apply({ unified: { "../escape": "1" } }), /not a file name/);
    mgr.freeze();
    assert.equal(read(join(d, "cgroup.freeze")), "1");
    writeFileSync(join(d, "cgroup.events"), "populated 1\nfrozen 1\n");
    assert.equal(mgr.frozen(), true);
    mgr.thaw();
    assert.equal(read(join(d, "cgroup.freeze")), "0");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("cpu.shares converts to cpu.weight as runc and crun do", () => {
  assert.equal(sharesToWeight(2), 1);
  assert.equal(sharesToWeight(1024), 39);
  assert.equal(sharesToWeight(262144), 10000);
});

test("cgroup v2 on the kernel: a process joins, freezes, thaws, and the cgroup goes", async (t) => {
  const unified = parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8")).find(
    (m) => m.version === 2,
  );
  if (process.getuid?.() !== 0) return t.skip("needs root");
  if (!unified) return t.skip("no cgroup2 hierarchy mounted");
  // cgroup.freeze, cgroup.procs and cgroup.events are core v2 files: no controller is needed,
  // so the nearly empty v2 mount of a hybrid host is enough
  const mgr = new CgroupV2(unified.mountpoint, `/vessel-cg-test-${process.pid}`);
  mgr.create();
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    writeFileSync(mgr.procsFiles()[0]!, String(child.pid));
    assert.deepEqual(mgr.pids(), [child.pid]);
    mgr.freeze();
    assert.equal(mgr.frozen(), true);
    assert.match(readFileSync(`/proc/${child.pid}/status`, "utf8"), /^State:\s+S/m);
    mgr.thaw();
    assert.equal(mgr.frozen(), false);
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
  }
  for (let i = 0; i < 100 && mgr.pids().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  mgr.destroy();
  assert.equal(existsSync(mgr.record.paths.unified!), false);
});
