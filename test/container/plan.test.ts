import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultSpec } from "../../src/container/default_spec.js";
import {
  buildCreatePlan,
  buildExecPlan,
  CLONE,
  encodePlan,
  MS,
  type Op,
  parseMountOptions,
} from "../../src/container/plan.js";
import type { Spec } from "../../src/container/spec.js";

const ALL_CAPS = (1n << 41n) - 1n;

function plan(edit: (s: Spec) => void = () => {}) {
  const spec = defaultSpec();
  spec.process!.terminal = false;
  spec.mounts = spec.mounts!.filter((m) => m.type !== "cgroup");
  edit(spec);
  return buildCreatePlan({
    spec,
    bundle: "/b",
    rootfs: "/b/rootfs",
    fifo: "/run/x/exec.fifo",
    cgroup: { version: 1, paths: { memory: "/sys/fs/cgroup/memory/c", pids: "/sys/fs/cgroup/pids/c" } },
    cgroupMounts: [],
    noPivot: false,
    noNewKeyring: false,
    preserveFds: 0,
    wait: false,
    availableCaps: ALL_CAPS,
    syncCreateRuntime: false,
    hookState: "{}",
  });
}
const names = (ops: Op[]) => ops.map((o) => String(o[0]));

test("mount options split into flags, propagation and data", () => {
  const o = parseMountOptions(["nosuid", "noexec", "ro", "rslave", "mode=755", "size=65536k", "z"]);
  assert.equal(o.flags, MS.NOSUID | MS.NOEXEC | MS.RDONLY);
  assert.equal(o.propagation, MS.SLAVE | MS.REC);
  assert.equal(o.data, "mode=755,size=65536k");
  assert.equal(parseMountOptions(["ro", "rw"]).flags, 0, "a later option wins");
  assert.equal(parseMountOptions(["rbind"]).flags, MS.BIND | MS.REC);
});

test("the create plan clones the spec's namespaces and puts the child (not the helper) in the cgroups", () => {
  const p = plan();
  // the cgroup namespace is made by the child once it is in its cgroups
  assert.equal(p.cloneFlags, CLONE.NEWPID | CLONE.NEWNET | CLONE.NEWIPC | CLONE.NEWUTS | CLONE.NEWNS);
  assert.deepEqual(p.child[0], ["unshare", String(CLONE.NEWCGROUP)]);
  assert.deepEqual(p.pre.slice(0, 2), [
    ["mkfifo", "/run/x/exec.fifo", String(0o622)],
    ["fifoopen", "/run/x/exec.fifo"],
  ]);
  assert.deepEqual(
    p.pre.filter((o) => o[0] === "cgroup"),
    [
      ["cgroup", "/sys/fs/cgroup/memory/c/cgroup.procs"],
      ["cgroup", "/sys/fs/cgroup/pids/c/cgroup.procs"],
    ],
  );
});

test("the create plan joins a namespace given by path instead of creating it", () => {
  const p = plan((s) => {
    s.linux!.namespaces = s.linux!.namespaces!.map((n) =>
      n.type === "network" ? { type: "network", path: "/run/netns/x" } : n,
    );
  });
  assert.equal(p.cloneFlags & CLONE.NEWNET, 0);
  assert.deepEqual(
    p.pre.find((o) => o[0] === "setns"),
    ["setns", "/run/netns/x", String(CLONE.NEWNET)],
  );
});

test("the create plan orders the container set-up: mounts, devices, fifo, pivot, masks, ready, wait, exec", () => {
  const ops = names(plan().child);
  const at = (n: string) => ops.indexOf(n);
  assert.ok(at("mountin") < at("device"));
  assert.ok(at("device") < at("pivot"));
  assert.ok(at("pivot") < at("maskpath"));
  assert.ok(at("maskpath") < at("readonly"));
  assert.ok(at("lookup") < at("ready"));
  assert.ok(at("setuid") < at("ready"), "user, caps and cwd are set before the container reports ready");
  assert.ok(at("ready") < at("fifowait"));
  assert.ok(at("fifowait") < at("nnp"));
  assert.ok(at("cloexec") < at("exec"));
  assert.equal(ops.at(-1), "exec");
  assert.equal(
    plan((s) => (s.root!.readonly = true)).child.filter((o) => o[0] === "mount" && o[2] === "/").length,
    2,
  );
});

test("the create plan: bounding set drops before the uid changes, seccomp after no_new_privs", () => {
  const p = plan((s) => {
    s.process!.user = { uid: 1000, gid: 1000, additionalGids: [5, 6], umask: 0o077 };
    s.linux!.seccomp = { defaultAction: "SCMP_ACT_ALLOW" };
  });
  const ops = names(p.child);
  assert.ok(ops.indexOf("bounding") < ops.indexOf("setuid"));
  assert.ok(ops.indexOf("nnp") < ops.indexOf("seccomp"));
  assert.deepEqual(
    p.child.find((o) => o[0] === "setgroups"),
    ["setgroups", "5", "6"],
  );
  assert.deepEqual(
    p.child.find((o) => o[0] === "umask"),
    ["umask", String(0o077)],
  );
  // CAP_AUDIT_WRITE(29) CAP_KILL(5) CAP_NET_BIND_SERVICE(10)
  const caps = p.child.filter((o) => o[0] === "caps").at(-1)!;
  assert.equal(caps[1], `0x${((1n << 29n) | (1n << 5n) | (1n << 10n)).toString(16)}`);
});

test("the create plan loads seccomp while CAP_SYS_ADMIN is held when no_new_privs is off", () => {
  const p = plan((s) => {
    s.process!.noNewPrivileges = false;
    s.linux!.seccomp = { defaultAction: "SCMP_ACT_ALLOW" };
  });
  const ops = names(p.child);
  assert.equal(ops.indexOf("nnp"), -1);
  const firstCaps = ops.indexOf("caps");
  assert.ok(firstCaps < ops.indexOf("seccomp"));
  assert.equal(p.child[firstCaps]![1], `0x${ALL_CAPS.toString(16)}`);
  assert.ok(ops.lastIndexOf("caps") > ops.indexOf("seccomp"));
});

test("the create plan writes uid/gid maps from the runtime side for a new user namespace", () => {
  const p = plan((s) => {
    s.linux!.namespaces!.push({ type: "user" });
    s.linux!.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    s.linux!.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
  });
  assert.ok(p.cloneFlags & CLONE.NEWUSER);
  assert.deepEqual(
    p.post.filter((o) => String(o[1]).startsWith("/proc/")),
    [
      ["write", "/proc/{pid}/uid_map", "0 100000 65536\n"],
      ["write", "/proc/{pid}/gid_map", "0 100000 65536\n"],
    ],
  );
});

test("the create plan refuses a spec without a mount namespace", () => {
  assert.throws(
    () => plan((s) => (s.linux!.namespaces = [{ type: "pid" }])),
    /needs a new "mount" namespace/,
  );
});

test("bind mounts are remounted for their flags and get their propagation", () => {
  const p = plan((s) =>
    s.mounts!.push({
      destination: "/data",
      type: "bind",
      source: "/tmp",
      options: ["rbind", "ro", "rprivate"],
    }),
  );
  const data = p.child.filter((o) => o[0] === "mountin" && o[1] === "data");
  assert.deepEqual(
    data.map((o) => Number(o[5])),
    [MS.BIND | MS.REC, MS.BIND | MS.REMOUNT | MS.RDONLY, MS.PRIVATE | MS.REC],
  );
  assert.throws(
    () => plan((s) => s.mounts!.push({ destination: "/x", type: "bind", source: "/no/such/dir" })),
    /does not exist/,
  );
});

test("the exec plan joins the init's namespaces by /proc path, user namespace first", () => {
  const spec = defaultSpec();
  spec.linux!.namespaces!.push({ type: "user" });
  const p = buildExecPlan({
    initPid: 42,
    spec,
    process: { ...spec.process!, args: ["sh"] },
    cgroup: { version: 1, paths: { pids: "/cg/pids/c" } },
    preserveFds: 0,
    wait: true,
    availableCaps: ALL_CAPS,
  });
  const setns = p.pre.filter((o) => o[0] === "setns").map((o) => o[1]);
  assert.equal(setns[0], "/proc/42/ns/user");
  assert.ok(setns.includes("/proc/42/ns/mnt"));
  assert.equal(p.cloneFlags, 0);
  assert.equal(names(p.child).at(-1), "exec");
});

test("plans encode as length-prefixed op lists", () => {
  const b = encodePlan({
    cloneFlags: 5,
    wait: true,
    pre: [["a", "bc"]],
    post: [],
    child: [["x", Buffer.from([0, 1])]],
  });
  assert.equal(b.readUInt32LE(0), b.length - 4);
  assert.equal(b.readUInt32LE(4), 5);
  assert.equal(b.readUInt32LE(8), 1);
  assert.equal(b.readUInt32LE(12), 1, "one pre op");
  assert.equal(b.readUInt32LE(16), 2, "two args");
});

test("a terminal needs a console socket unless the run is in the foreground", () => {
  assert.throws(
    () => plan((s) => (s.process!.terminal = true)),
    /cannot allocate tty .* without setting console socket/,
  );
  const spec = defaultSpec();
  const base = {
    spec,
    bundle: "/b",
    rootfs: "/b/rootfs",
    cgroup: { version: 1 as const, paths: {} },
    cgroupMounts: [],
    noPivot: false,
    noNewKeyring: false,
    preserveFds: 0,
    availableCaps: ALL_CAPS,
    syncCreateRuntime: false,
    hookState: "{}",
  };
  const fg = buildCreatePlan({ ...base, wait: true });
  assert.equal(names(fg.child).includes("pty"), false, "foreground: the caller's terminal is used as is");
  const withSocket = buildCreatePlan({ ...base, wait: false, consoleSocket: "/run/c.sock" });
  assert.ok(names(withSocket.child).includes("pty"));
  assert.deepEqual(
    withSocket.pre.find((o) => o[0] === "console"),
    ["console", "/run/c.sock"],
  );
});
