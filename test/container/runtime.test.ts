import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { runtimeServerSocket } from "../../src/cli/runtime_server.js";
import type { Spec } from "../../src/container/spec.js";
import {
  type Bundle,
  integrationSkipReason,
  LAUNCHER,
  makeBundle,
  rewriteSpec,
  uniqueId,
  VESSEL_RUNC,
  vesselRunc,
} from "./fixtures.js";

/**
 * Integration tests of vessel-runc as root: real namespaces, mounts, cgroups (v1 on this host),
 * with the static multi-call program native/nsexec/ctest.c as the container's process.
 */
const skip = integrationSkipReason();
const bundles: Bundle[] = [];
after(() => {
  for (const b of bundles) b.cleanup();
});

function bundle(edit: (s: Spec) => void = () => {}): Bundle {
  const b = makeBundle(edit);
  bundles.push(b);
  return b;
}

/** `vessel-runc run` of ctest with the given arguments; returns status and output. */
function runCtest(b: Bundle, args: string[], edit: (s: Spec) => void = () => {}) {
  b.spec = structuredClone(b.base);
  rewriteSpec(b, (s) => {
    s.process!.args = ["/bin/ctest", ...args];
    edit(s);
  });
  const id = uniqueId("run");
  const r = vesselRunc(b, ["run", "--bundle", b.bundle, id]);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, id };
}

function cgroupDir(controller: string, id: string): string {
  return `/sys/fs/cgroup/${controller}/vessel-runc/${id}`;
}

/** Nothing of the container is left: state dir, cgroup, process. */
function assertNothingLeft(b: Bundle, id: string, pid?: number): void {
  assert.equal(existsSync(join(b.root, id)), false, "state directory removed");
  for (const c of ["pids", "memory", "freezer", "cpu"])
    assert.equal(existsSync(cgroupDir(c, id)), false, `${c} cgroup removed`);
  if (pid)
    assert.equal(
      existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z "),
      false,
      "process gone",
    );
}

test("a container's process is pid 1 with its own hostname, mounts and capabilities", { skip }, () => {
  const b = bundle();
  assert.equal(runCtest(b, ["pid"]).stdout, "1\n");
  assert.equal(runCtest(b, ["hostname"]).stdout, "vessel\n");
  const mounts = runCtest(b, ["cat", "/proc/self/mountinfo"]).stdout;
  assert.match(mounts, / \/ [^ ]+ .* - /, "a root mount");
  assert.match(mounts, / \/proc rw[^ ]* - proc /);
  assert.match(mounts, / \/dev\/pts [^ ]+ - devpts /);
  assert.match(mounts, / \/sys ro,[^ ]* - sysfs /);
  assert.doesNotMatch(mounts, /\/work\/|\/home\//, "no host paths visible as mount points");
  const caps = runCtest(b, ["caps"]).stdout;
  // the spec's set: CAP_AUDIT_WRITE(29) CAP_KILL(5) CAP_NET_BIND_SERVICE(10)
  assert.match(caps, /CapEff:\s+0000000020000420/);
  assert.match(caps, /CapBnd:\s+0000000020000420/);
  assert.match(caps, /NoNewPrivs:\s+1/);
  assert.equal(runCtest(b, ["ls", "/dev"]).stdout.split("\n").includes("null"), true);
});

test("exit status, cwd, env, user, groups and umask reach the process", { skip }, () => {
  const b = bundle();
  assert.equal(runCtest(b, ["exit", "7"]).status, 7);
  mkdirSync(join(b.rootfs, "work"), { recursive: true });
  const opts = (s: Spec) => {
    s.process!.cwd = "/work";
    s.process!.env = ["PATH=/bin", "GREETING=hello"];
    s.process!.user = { uid: 1000, gid: 1001, additionalGids: [2000, 2001], umask: 0o027 };
  };
  assert.equal(runCtest(b, ["cwd"], opts).stdout, "/work\n");
  assert.match(runCtest(b, ["env"], opts).stdout, /^GREETING=hello$/m);
  assert.equal(runCtest(b, ["id"], opts).stdout, "uid=1000 gid=1001 groups=2000,2001\n");
  assert.equal(runCtest(b, ["umask"], opts).stdout, "0027\n");
});

test("rlimits, oomScoreAdj, sysctl, read-only root, masked and read-only paths", { skip }, () => {
  const b = bundle();
  assert.equal(
    runCtest(
      b,
      ["rlimit", "NOFILE"],
      (s) => (s.process!.rlimits = [{ type: "RLIMIT_NOFILE", soft: 100, hard: 200 }]),
    ).stdout,
    "100 200\n",
  );
  assert.equal(
    runCtest(b, ["cat", "/proc/self/oom_score_adj"], (s) => (s.process!.oomScoreAdj = 500)).stdout,
    "500\n",
  );
  assert.equal(
    runCtest(
      b,
      ["cat", "/proc/sys/net/ipv4/ip_forward"],
      (s) => (s.linux!.sysctl = { "net.ipv4.ip_forward": "1" }),
    ).stdout,
    "1\n",
  );
  assert.equal(
    runCtest(b, ["write", "/file", "x"], (s) => (s.root!.readonly = true)).stdout,
    "error EROFS\n",
  );
  assert.equal(runCtest(b, ["write", "/tmp/file", "x"]).stdout, "ok\n");
  assert.equal(runCtest(b, ["cat", "/proc/timer_list"]).stdout, "", "masked by /dev/null");
  assert.equal(
    runCtest(b, ["write", "/proc/sys/kernel/hostname", "x"]).stdout,
    "error EROFS\n",
    "read-only path",
  );
  assert.equal(runCtest(b, ["ls", "/sys/firmware"]).stdout, "", "masked directory is an empty tmpfs");
  assert.equal(
    runCtest(b, ["machine"], (s) => (s.linux!.personality = { domain: "LINUX32" })).stdout,
    "i686\n",
  );
});

test("seccomp: the compiled filter denies with the chosen errno and lets the rest through", { skip }, () => {
  const b = bundle();
  const profile = (s: Spec) => {
    s.linux!.seccomp = {
      defaultAction: "SCMP_ACT_ALLOW",
      architectures: ["SCMP_ARCH_X86_64"],
      syscalls: [
        { names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 13 },
        {
          names: ["personality"],
          action: "SCMP_ACT_ERRNO",
          args: [{ index: 0, value: 8, op: "SCMP_CMP_NE" }],
        },
      ],
    };
  };
  assert.equal(runCtest(b, ["try", "mkdir"], profile).stdout, "EACCES\n");
  assert.equal(runCtest(b, ["try", "uname"], profile).stdout, "ok\n");
  assert.equal(runCtest(b, ["try", "personality", "8"], profile).stdout, "ok\n");
  assert.equal(runCtest(b, ["try", "personality", "4"], profile).stdout, "EPERM\n");
  assert.match(runCtest(b, ["caps"], profile).stdout, /Seccomp:\s+2/);
  // without no_new_privs the filter is loaded while CAP_SYS_ADMIN is still held
  const noNnp = (s: Spec) => {
    profile(s);
    s.process!.noNewPrivileges = false;
  };
  assert.equal(runCtest(b, ["try", "mkdir"], noNnp).stdout, "EACCES\n");
  assert.match(runCtest(b, ["caps"], noNnp).stdout, /NoNewPrivs:\s+0/);
});

test("capabilities: a dropped capability is refused, a granted one works", { skip }, () => {
  const b = bundle();
  assert.equal(runCtest(b, ["try", "sethostname"]).stdout, "EPERM\n", "no CAP_SYS_ADMIN");
  const withAdmin = (s: Spec) => {
    for (const set of ["bounding", "effective", "permitted"] as const)
      s.process!.capabilities![set]!.push("CAP_SYS_ADMIN");
  };
  assert.equal(runCtest(b, ["try", "sethostname"], withAdmin).stdout, "ok\n");
});

test("limits bite: over memory.limit_in_bytes the process is OOM-killed; a fork bomb stops at pids.max", {
  skip,
}, () => {
  const b = bundle();
  const mem = runCtest(b, ["alloc", "256"], (s) => (s.linux!.resources = { memory: { limit: 32 << 20 } }));
  assert.equal(mem.status, 137, `killed by SIGKILL (stdout ${mem.stdout})`);
  assert.doesNotMatch(mem.stdout, /allocated/);
  const bomb = runCtest(b, ["forkbomb"], (s) => (s.linux!.resources = { pids: { limit: 16 } }));
  const m = /forks (\d+) errno (\w+)/.exec(bomb.stdout);
  assert.ok(m, bomb.stdout + bomb.stderr);
  assert.ok(Number(m[1]) < 16, `stopped at ${m[1]} forks`);
  assert.equal(m[2], "EAGAIN");
});

test("lifecycle: create, state, start, exec, pause, resume, kill, delete", { skip }, async () => {
  const b = bundle((s) => (s.process!.args = ["/bin/ctest", "sleep", "30"]));
  const id = uniqueId("life");
  const pidFile = join(b.dir, "pid");
  const c = vesselRunc(b, ["create", "--bundle", b.bundle, "--pid-file", pidFile, id]);
  assert.equal(c.status, 0, c.stderr);
  const state = () => JSON.parse(vesselRunc(b, ["state", id]).stdout) as { status: string; pid: number };
  const s1 = state();
  assert.equal(s1.status, "created");
  assert.equal(Number(readFileSync(pidFile, "utf8")), s1.pid);
  assert.equal(vesselRunc(b, ["start", id]).status, 0);
  assert.equal(state().status, "running");
  assert.match(vesselRunc(b, ["start", id]).stderr, /not created/);
  const ex = vesselRunc(b, ["exec", id, "/bin/ctest", "ppid"]);
  assert.equal(ex.stdout, "0\n", "an exec'd process is in the container's pid namespace");
  assert.equal(vesselRunc(b, ["exec", id, "/bin/ctest", "exit", "3"]).status, 3);
  assert.deepEqual(JSON.parse(vesselRunc(b, ["ps", "--format", "json", id]).stdout), [s1.pid]);
  assert.equal(vesselRunc(b, ["pause", id]).status, 0);
  assert.equal(state().status, "paused");
  assert.equal(readFileSync(join(cgroupDir("freezer", id), "freezer.state"), "utf8").trim(), "FROZEN");
  assert.equal(vesselRunc(b, ["resume", id]).status, 0);
  assert.equal(state().status, "running");
  assert.equal(vesselRunc(b, ["update", "--pids-limit", "50", id]).status, 0);
  assert.equal(readFileSync(join(cgroupDir("pids", id), "pids.max"), "utf8").trim(), "50");
  assert.match(vesselRunc(b, ["list"]).stdout, new RegExp(`${id}\\s+${s1.pid}\\s+running`));
  assert.match(vesselRunc(b, ["delete", id]).stderr, /not stopped/);
  assert.equal(vesselRunc(b, ["kill", "--all", id, "KILL"]).status, 0);
  for (let i = 0; i < 100 && state().status !== "stopped"; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(state().status, "stopped");
  const k = vesselRunc(b, ["kill", id, "TERM"]);
  assert.equal(k.status, 1);
  assert.match(k.stderr, /container not running/);
  assert.equal(vesselRunc(b, ["delete", id]).status, 0);
  const gone = vesselRunc(b, ["state", id]);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /does not exist/);
  assertNothingLeft(b, id, s1.pid);
});

test("delete of a created container needs no --force (as runc)", { skip }, () => {
  const b = bundle((s) => (s.process!.args = ["/bin/ctest", "sleep", "30"]));
  const id = uniqueId("created");
  assert.equal(vesselRunc(b, ["create", "--bundle", b.bundle, id]).status, 0);
  const pid = (JSON.parse(vesselRunc(b, ["state", id]).stdout) as { pid: number }).pid;
  const d = vesselRunc(b, ["delete", id]);
  assert.equal(d.status, 0, d.stderr);
  assertNothingLeft(b, id, pid);
});

test("delete --force kills a running container and removes everything", { skip }, () => {
  const b = bundle((s) => (s.process!.args = ["/bin/ctest", "sleep", "30"]));
  const id = uniqueId("force");
  assert.equal(vesselRunc(b, ["run", "-d", "--bundle", b.bundle, id]).status, 0);
  const pid = (JSON.parse(vesselRunc(b, ["state", id]).stdout) as { pid: number }).pid;
  assert.equal(vesselRunc(b, ["delete", "--force", id]).status, 0);
  assertNothingLeft(b, id, pid);
});

test("with --log-format json errors go to the log as {level:error,msg} lines", { skip }, () => {
  const b = bundle();
  const log = join(b.dir, "log.json");
  const r = vesselRunc(b, ["--log", log, "--log-format", "json", "state", "no-such-container"]);
  assert.equal(r.status, 1);
  const line = JSON.parse(readFileSync(log, "utf8").trim().split("\n").at(-1)!) as {
    level: string;
    msg: string;
  };
  assert.equal(line.level, "error");
  assert.match(line.msg, /container "no-such-container" does not exist/);
});

test("state works with no PATH and no flags (as podman calls it)", { skip }, () => {
  const r = spawnSync(process.execPath, [VESSEL_RUNC, "state", "no-such-container"], {
    env: {},
    encoding: "utf8",
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /does not exist/);
});

test("failed starts leave nothing behind: missing program, bad mount source, failing hook", { skip }, () => {
  const b = bundle();
  const missing = runCtest(b, [], (s) => (s.process!.args = ["no-such-program"]));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /executable file not found in \$PATH/);
  assertNothingLeft(b, missing.id);
  const badMount = runCtest(b, ["pid"], (s) =>
    s.mounts!.push({ destination: "/x", type: "bind", source: "/no/such/source" }),
  );
  assert.match(badMount.stderr, /does not exist/);
  assertNothingLeft(b, badMount.id);
  const hook = runCtest(b, ["pid"], (s) => (s.hooks = { createRuntime: [{ path: "/bin/false" }] }));
  assert.match(hook.stderr, /createRuntime hook \/bin\/false failed/);
  assertNothingLeft(b, hook.id);
  const invalid = runCtest(b, ["pid"], (s) => (s.process!.cwd = "relative"));
  assert.match(invalid.stderr, /process.cwd/);
  assertNothingLeft(b, invalid.id);
});

test("hooks run at their points with the state on stdin; createContainer runs in the container's namespaces", {
  skip,
}, () => {
  const b = bundle();
  const out = (n: string) => join(b.dir, n);
  const sh = (cmd: string) => ({ path: "/bin/sh", args: ["sh", "-c", cmd] });
  const r = runCtest(b, ["pid"], (s) => {
    s.hooks = {
      createRuntime: [sh(`cat > ${out("createRuntime")}`)],
      createContainer: [sh(`cat /proc/sys/kernel/hostname > ${out("createContainer")}`)],
      poststart: [sh(`cat > ${out("poststart")}`)],
      poststop: [sh(`cat > ${out("poststop")}`)],
    };
  });
  assert.equal(r.status, 0, r.stderr);
  const cr = JSON.parse(readFileSync(out("createRuntime"), "utf8")) as {
    id: string;
    pid: number;
    bundle: string;
  };
  assert.equal(cr.id, r.id);
  assert.ok(cr.pid > 0);
  assert.equal(cr.bundle, b.bundle);
  assert.equal(readFileSync(out("createContainer"), "utf8"), "vessel\n", "in the container's uts namespace");
  assert.equal((JSON.parse(readFileSync(out("poststart"), "utf8")) as { status: string }).status, "running");
  assert.equal((JSON.parse(readFileSync(out("poststop"), "utf8")) as { status: string }).status, "stopped");
});

test("CVE-2019-5736: the container's init runs from a sealed memfd, not the helper on disk", { skip }, () => {
  const b = bundle((s) => (s.process!.args = ["/bin/ctest", "sleep", "30"]));
  const id = uniqueId("cve5736");
  assert.equal(vesselRunc(b, ["create", "--bundle", b.bundle, id]).status, 0);
  try {
    const pid = (JSON.parse(vesselRunc(b, ["state", id]).stdout) as { pid: number }).pid;
    assert.match(readlinkSync(`/proc/${pid}/exe`), /^\/memfd:vessel-nsexec/);
    assert.throws(
      () => openSync(`/proc/${pid}/exe`, "r+"),
      /ETXTBSY|EPERM|EACCES/,
      "the sealed copy cannot be written",
    );
    assert.match(readFileSync(`/proc/${pid}/status`, "utf8"), /NSpid:\s+\d+\s+1\b/);
  } finally {
    vesselRunc(b, ["delete", "--force", id]);
  }
});

test("CVE-2024-21626: no runtime fd reaches the container, and a cwd outside the root is refused", {
  skip,
}, () => {
  const b = bundle();
  rewriteSpec(b, (s) => (s.process!.args = ["/bin/ctest", "fds"]));
  const hostDir = openSync("/sys/fs/cgroup", "r");
  try {
    // the runtime is started with extra fds (3: a host directory, 4: a pipe); none is preserved
    const r = spawnSync(
      process.execPath,
      [VESSEL_RUNC, "--root", b.root, "run", "--bundle", b.bundle, uniqueId("fds")],
      {
        stdio: ["pipe", "pipe", "pipe", hostDir, "pipe"],
        encoding: "utf8",
      },
    );
    const fds = (r.stdout as string)
      .trim()
      .split("\n")
      .map((l) => l.split(" ")[0]);
    assert.deepEqual(fds, ["0", "1", "2"], r.stdout);
    // the attack of CVE-2024-21626: cwd through a leaked host directory fd
    rewriteSpec(b, (s) => {
      s.process!.args = ["/bin/ctest", "cwd"];
      s.process!.cwd = "/proc/self/fd/3";
    });
    const id = uniqueId("cwd");
    const r2 = spawnSync(
      process.execPath,
      [VESSEL_RUNC, "--root", b.root, "run", "--preserve-fds", "1", "--bundle", b.bundle, id],
      {
        stdio: ["pipe", "pipe", "pipe", hostDir],
        encoding: "utf8",
      },
    );
    assert.notEqual(r2.status, 0, `ran with cwd ${r2.stdout}`);
    assert.match(r2.stderr as string, /outside the container root/);
    assertNothingLeft(b, id);
  } finally {
    closeSync(hostDir);
  }
});

test("terminal: the pty master goes to --console-socket, sized by process.consoleSize", {
  skip,
}, async (t) => {
  if (spawnSync("python3", ["-c", "import socket; socket.recv_fds"]).status !== 0) {
    t.skip("needs python3 (3.9+) to receive the pty master with SCM_RIGHTS");
    return;
  }
  const b = bundle((s) => {
    s.process!.terminal = true;
    s.process!.consoleSize = { height: 33, width: 101 };
    s.process!.args = ["/bin/ctest", "winsize"];
  });
  const sock = join(b.dir, "console.sock");
  const receiver = `
import socket, os, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
msg, fds, _, _ = socket.recv_fds(c, 1024, 1)
out = b""
while True:
    try: d = os.read(fds[0], 4096)
    except OSError: break
    if not d: break
    out += d
print(msg.decode(), repr(out.decode()), flush=True)
`;
  writeFileSync(join(b.dir, "recv.py"), receiver);
  const py = spawn("python3", [join(b.dir, "recv.py"), sock], { stdio: ["ignore", "pipe", "inherit"] });
  let text = "";
  py.stdout.on("data", (d: Buffer) => (text += d.toString()));
  for (let i = 0; i < 200 && !text.includes("ready"); i++) await new Promise((r) => setTimeout(r, 10));
  const r = vesselRunc(b, ["run", "--console-socket", sock, "--bundle", b.bundle, uniqueId("tty")]);
  assert.equal(r.status, 0, r.stderr);
  await new Promise((r) => py.on("exit", r));
  assert.ok(text.includes("/dev/pts/0 '33 101\\r\\n'"), text);
});

test("user namespace: uid/gid mappings are written and the process is root inside only", { skip }, () => {
  const b = bundle();
  const userns = (s: Spec) => {
    s.linux!.namespaces!.push({ type: "user" });
    s.linux!.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    s.linux!.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
  };
  const map = runCtest(b, ["cat", "/proc/self/uid_map"], userns);
  assert.equal(map.status, 0, map.stderr);
  assert.match(map.stdout, /^\s+0\s+100000\s+65536$/m);
  assert.equal(runCtest(b, ["id"], userns).stdout, "uid=0 gid=0 groups=\n");
  assert.equal(
    runCtest(b, ["write", "/etc/x", "y"], userns).stdout,
    "error EACCES\n",
    "host root's files are not writable",
  );
});

test("a namespace given by path is joined, not created", { skip }, async () => {
  const b = bundle((s) => (s.process!.args = ["/bin/ctest", "sleep", "30"]));
  const holder = spawn("unshare", ["-n", "sleep", "30"], { stdio: "ignore" });
  try {
    const nsPath = `/proc/${holder.pid}/ns/net`;
    for (let i = 0; i < 100 && readlinkSync(nsPath) === readlinkSync("/proc/self/ns/net"); i++)
      await new Promise((r) => setTimeout(r, 10));
    rewriteSpec(b, (s) => {
      s.linux!.namespaces = s.linux!.namespaces!.map((n) =>
        n.type === "network" ? { type: "network", path: nsPath } : n,
      );
    });
    const id = uniqueId("netns");
    const c = vesselRunc(b, ["create", "--bundle", b.bundle, id]);
    assert.equal(c.status, 0, c.stderr);
    const pid = (JSON.parse(vesselRunc(b, ["state", id]).stdout) as { pid: number }).pid;
    assert.equal(readlinkSync(`/proc/${pid}/ns/net`), readlinkSync(nsPath));
    assert.notEqual(
      readlinkSync(`/proc/${pid}/ns/uts`),
      readlinkSync("/proc/self/ns/uts"),
      "the others are new",
    );
    vesselRunc(b, ["delete", "--force", id]);
  } finally {
    holder.kill();
  }
});

test("the launcher needs no PATH and answers through the runtime server", { skip }, (t) => {
  if (!existsSync(LAUNCHER)) return t.skip(`launcher not built: ${LAUNCHER}`);
  const b = bundle();
  // `list` starts the server if none runs (a server from an older build answers, then exits)
  for (let i = 0; i < 2; i++) assert.equal(vesselRunc(b, ["list"], { launcher: true, env: {} }).status, 0);
  assert.ok(existsSync(runtimeServerSocket()), "this checkout's server is listening");
  const st = vesselRunc(b, ["state", "no-such-container"], { launcher: true, env: {} });
  assert.equal(st.status, 1);
  assert.match(st.stderr, /container "no-such-container" does not exist/);
  rewriteSpec(b, (s) => (s.process!.args = ["/bin/ctest", "pid"]));
  const r = vesselRunc(b, ["run", "--bundle", b.bundle, uniqueId("launch")], { launcher: true, env: {} });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "1\n", "the container's stdout is the caller's");
  rewriteSpec(b, (s) => (s.process!.args = ["/bin/ctest", "exit", "9"]));
  const id = uniqueId("launch");
  assert.equal(vesselRunc(b, ["run", "--bundle", b.bundle, id], { launcher: true, env: {} }).status, 9);
  assert.equal(
    existsSync(join(b.root, id)),
    false,
    "a foreground run deletes its container before returning",
  );
  const direct = vesselRunc(b, ["state", "x"], { launcher: true, env: { VESSEL_RUNC_DIRECT: "1" } });
  assert.match(direct.stderr, /does not exist/);
});

test("cgroup v2: device rules are an eBPF program attached to the container's cgroup", { skip }, (t) => {
  const v2 = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .find((l) => l.includes(" - cgroup2 "))
    ?.split(" ")[4];
  if (!v2) return t.skip("no cgroup2 hierarchy mounted");
  const env = { ...process.env, VESSEL_RUNC_CGROUP2: v2 };
  const b = bundle((s) => {
    s.linux!.devices = [
      { type: "c", path: "/dev/net/tun", major: 10, minor: 200, fileMode: 0o666, uid: 0, gid: 0 },
    ];
    s.linux!.resources = { devices: [{ allow: false, access: "rwm" }] };
    s.process!.args = ["/bin/ctest", "write", "/dev/net/tun", "x"];
  });
  const denied = vesselRunc(b, ["run", "--bundle", b.bundle, uniqueId("v2dev")], { env });
  assert.equal(denied.stdout, "error EPERM\n", denied.stderr);
  rewriteSpec(b, (s) =>
    s.linux!.resources!.devices!.push({ allow: true, type: "c", major: 10, minor: 200, access: "rw" }),
  );
  const allowed = vesselRunc(b, ["run", "--bundle", b.bundle, uniqueId("v2dev")], { env });
  assert.doesNotMatch(
    allowed.stdout,
    /EPERM/,
    "the open passes the filter (the write itself fails: no tun device set up)",
  );
  rewriteSpec(b, (s) => (s.process!.args = ["/bin/ctest", "write", "/dev/null", "x"]));
  assert.equal(
    vesselRunc(b, ["run", "--bundle", b.bundle, uniqueId("v2dev")], { env }).stdout,
    "ok\n",
    "default rules",
  );
});

test("library: run's stdio option gives the container's process the caller's fds 0-2", { skip }, async () => {
  const { Runtime } = await import("../../src/container/runtime.js");
  const b = bundle((s) => {
    s.process!.args = ["/bin/ctest", "pid"];
  });
  const out = join(b.dir, "stdout.txt");
  const fds = [openSync("/dev/null", "r"), openSync(out, "w"), openSync(join(b.dir, "stderr.txt"), "w")];
  try {
    const rt = new Runtime({ root: join(b.dir, "state-lib") });
    const code = await rt.run(uniqueId("stdio"), { bundle: b.bundle, stdio: [fds[0]!, fds[1]!, fds[2]!] });
    assert.equal(code, 0);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  assert.equal(
    readFileSync(out, "utf8"),
    "1\n",
    "the process (pid 1 in its namespace) wrote to the given fd",
  );
});
