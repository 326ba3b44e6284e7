import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { attachSocketPath } from "../../../src/container/manager/attach.js";
import { Manager } from "../../../src/container/manager/manager.js";

/**
 * Terminals end to end, as root, the `vessel` CLI on a pty that python3's pty module drives (as
 * a user's terminal, sized 27x77): exec -t/-it, run -d -t with attach and detach keys, attach to
 * a container without a terminal. The detached terminal needs Vessel's own runtime (the library,
 * whose helper hands the pty master to the monitor); with VESSEL_OCI_RUNTIME set to a CLI
 * runtime those cases skip.
 */

const CLI = new URL("../../../../bin/vessel.js", import.meta.url).pathname;
const HELPER = new URL("../../../../native/build/vessel-nsexec", import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), "vessel-tty-"));
const env = { ...process.env, VESSEL_ROOT: root };

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (namespaces, overlayfs, cgroups)";
  if (spawnSync("python3", ["-c", "import pty"]).status !== 0) return "needs python3's pty module";
  if (!existsSync(HELPER)) return `Vessel's runtime helper is not built (${HELPER}): npm run build`;
  const rt = process.env.VESSEL_OCI_RUNTIME;
  if (rt !== undefined && rt !== "" && rt !== "vessel")
    return `VESSEL_OCI_RUNTIME=${rt}: a CLI runtime cannot keep a detached terminal`;
  const probe = mkdtempSync(join(tmpdir(), "vessel-ovl-"));
  for (const d of ["l", "u", "w", "m"]) mkdirSync(join(probe, d));
  const lower = `lowerdir=${probe}/l,upperdir=${probe}/u,workdir=${probe}/w`;
  const ok = spawnSync("mount", ["-t", "overlay", "overlay", "-o", lower, `${probe}/m`]).status === 0;
  if (ok) spawnSync("umount", [`${probe}/m`]);
  rmSync(probe, { recursive: true, force: true });
  return ok ? undefined : "overlayfs mounts fail on this host";
}

const skipReason = missing();
let baseReady: string | undefined;

/**
 * Runs the CLI on a new pty (27 rows, 77 columns). Each step waits until `wait` shows up in the
 * output since the previous step, pauses a moment (so the CLI has its terminal in raw mode), and
 * types `send` ("@winsize ROWS COLS" resizes the terminal instead: the CLI gets SIGWINCH). Returns the terminal's output, how many steps were taken, and the exit status.
 */
const DRIVER = `
import os, pty, sys, time, select, fcntl, termios, struct, json
steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 27, 77, 0, 0))
    os.execv(sys.argv[2], sys.argv[2:])
out = b""
deadline = time.time() + 40
i = 0
mark = 0
while time.time() < deadline:
    if i < len(steps) and steps[i][0].encode() in out[mark:]:
        time.sleep(0.3)
        mark = len(out)
        if steps[i][1].startswith("@winsize "):
            rows, cols = map(int, steps[i][1].split()[1:])
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        else:
            os.write(fd, steps[i][1].encode("latin1"))
        i += 1
        continue
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            d = os.read(fd, 4096)
        except OSError:
            break
        if not d:
            break
        out += d
try:
    _, status = os.waitpid(pid, os.WNOHANG if time.time() >= deadline else 0)
    code = os.waitstatus_to_exitcode(status) if _ else 99
except ChildProcessError:
    code = 98
sys.stdout.write(json.dumps({"out": out.decode("latin1"), "steps": i, "code": code}))
`;

interface TermResult {
  out: string;
  steps: number;
  code: number;
}

function onTerminal(args: string[], steps: [wait: string, send: string][] = []): TermResult {
  const r = spawnSync("python3", ["-c", DRIVER, JSON.stringify(steps), process.execPath, CLI, ...args], {
    env,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `the pty driver failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as TermResult;
}

function vessel(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: "utf8", timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[]): string {
  const r = vessel(args);
  assert.equal(r.code, 0, `vessel ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function status(name: string): string {
  return JSON.parse(ok(["container", "inspect", name]))[0].State.Status as string;
}

before(() => {
  if (skipReason) return;
  const r = vessel(["image", "build", "--base", "busybox"]);
  baseReady = r.code === 0 ? undefined : `cannot make the busybox base image: ${r.stderr.trim()}`;
});

after(async () => {
  if (!skipReason) {
    const m = new Manager(root);
    for (const v of m.list(true)) await m.remove(v.config.id, true).catch(() => undefined);
  }
  spawnSync("umount", ["-R", root]);
  rmSync(root, { recursive: true, force: true });
});

function need(t: { skip(reason: string): void }): boolean {
  const why = skipReason ?? baseReady;
  if (why) t.skip(why);
  return why === undefined;
}

test("exec -it gives the process a pty of its own sized from the caller's terminal; its exit status is exec's", (t) => {
  if (!need(t)) return;
  ok(["container", "run", "-d", "--network", "none", "--name", "tty-exec", "busybox", "sleep", "300"]);
  const consoleMounts = () =>
    ok(["container", "exec", "tty-exec", "sh", "-c", "grep -c /dev/console /proc/1/mountinfo; true"]).trim();
  const before = consoleMounts();
  const r = onTerminal(["container", "exec", "-it", "tty-exec", "sh", "-c", "tty; stty size; exit 4"]);
  assert.match(r.out, /^\/dev\/pts\/\d+\r?$/m, r.out);
  assert.match(r.out, /^27 77\r?$/m, `the pty has the caller's size: ${r.out}`);
  assert.equal(r.code, 4, r.out);
  // typed input reaches the process with -i
  const typed = onTerminal(
    ["container", "exec", "-it", "tty-exec", "sh"],
    [
      ["# ", "echo typed-$((6*7))\r"],
      ["typed-42", "@winsize 31 88"],
      ["", "stty size; exit 0\r"],
    ],
  );
  assert.match(typed.out, /typed-42/, typed.out);
  assert.match(typed.out, /^31 88\r?\r?$/m, `the pty follows the caller's terminal size: ${typed.out}`);
  assert.equal(typed.code, 0, typed.out);
  // -t without -i: a terminal, but nothing typed is read
  const noInput = onTerminal([
    "container",
    "exec",
    "-t",
    "tty-exec",
    "sh",
    "-c",
    "test -t 1 && echo out-is-tty",
  ]);
  assert.match(noInput.out, /out-is-tty/, noInput.out);
  assert.equal(consoleMounts(), before, "an exec'd pty is not bound on the container's /dev/console");
  ok(["container", "rm", "-f", "tty-exec"]);
});

test("run -d -it keeps a terminal: attach shows a prompt and a typed command's output, Ctrl-P Ctrl-Q detaches, attach again, the exit code ends it", (t) => {
  if (!need(t)) return;
  const id = ok([
    "container",
    "run",
    "-d",
    "-it",
    "--network",
    "none",
    "--name",
    "tty-sh",
    "busybox",
    "sh",
  ]).trim();
  assert.ok(existsSync(attachSocketPath(id)), "the monitor serves the container's terminal");
  const first = onTerminal(
    ["container", "attach", "tty-sh"],
    [
      ["", "\r"],
      ["# ", "echo hello-$((6*7)); stty size\r"],
      ["hello-42", "@winsize 40 100"],
      ["", "stty size\r"],
      ["40 100", "\x10\x11"],
    ],
  );
  assert.equal(first.steps, 5, first.out);
  assert.match(first.out, /\/ # /, `a prompt: ${first.out}`);
  assert.match(first.out, /^hello-42\r?\r?$/m, first.out);
  assert.match(first.out, /^27 77\r?\r?$/m, `attach sizes the pty from its terminal: ${first.out}`);
  assert.match(first.out, /^40 100\r?\r?$/m, `and resizes it with the terminal: ${first.out}`);
  assert.equal(first.code, 0, `detaching is not an error: ${first.out}`);
  assert.equal(status("tty-sh"), "running", "the container keeps running after the detach keys");
  const again = onTerminal(
    ["container", "attach", "tty-sh"],
    [
      ["", "\r"],
      ["# ", "echo back-again\r"],
      ["back-again", "exit 7\r"],
    ],
  );
  assert.match(again.out, /^back-again\r?\r?$/m, again.out);
  assert.equal(again.code, 7, `attach returns the container's exit code: ${again.out}`);
  assert.equal(status("tty-sh"), "exited");
  assert.match(ok(["container", "logs", "tty-sh"]), /hello-42/, "the terminal's output is in the log");
  const stopped = vessel(["container", "attach", "tty-sh"]);
  assert.equal(stopped.code, 1);
  assert.match(stopped.stderr, /cannot attach to container tty-sh: it is exited; start it first/);
  ok(["container", "rm", "tty-sh"]);
  assert.equal(existsSync(attachSocketPath(id)), false, "the attach socket goes with the container");
});

test("attach --detach-keys: a custom sequence detaches and a broken one reaches the shell; an unparsable one is a usage error", (t) => {
  if (!need(t)) return;
  ok(["container", "run", "-d", "-it", "--network", "none", "--name", "tty-keys", "busybox", "sh"]);
  // q then - is not the sequence: both reach the shell; q ctrl-x detaches
  const r = onTerminal(
    ["container", "attach", "--detach-keys", "q,ctrl-x", "tty-keys"],
    [
      ["", "\r"],
      ["# ", "echo aq-$((1+1))\r"],
      ["aq-2", "q\x18"],
    ],
  );
  assert.equal(r.steps, 3, r.out);
  assert.match(r.out, /^aq-2\r?\r?$/m, r.out);
  assert.equal(r.code, 0, r.out);
  assert.equal(status("tty-keys"), "running");
  for (const bad of ["ctrl-1", "ctrl-p,,ctrl-q", "alt-x"]) {
    const u = vessel(["container", "attach", "--detach-keys", bad, "tty-keys"]);
    assert.equal(u.code, 2, `usage error for ${bad}: ${u.stderr}`);
    assert.ok(u.stderr.includes(`invalid --detach-keys "${bad}"`), u.stderr);
    assert.match(u.stderr, /ctrl-<value>/, "the message shows the syntax");
  }
  assert.equal(status("tty-keys"), "running", "a refused attach leaves the container alone");
  ok(["container", "rm", "-f", "tty-keys"]);
});

test("attach to a container without a terminal follows its output and returns its exit code", (t) => {
  if (!need(t)) return;
  ok([
    "container",
    "run",
    "-d",
    "--network",
    "none",
    "--name",
    "tty-none",
    "busybox",
    "sh",
    "-c",
    "sleep 2; echo first; sleep 1; echo second >&2; exit 3",
  ]);
  const r = vessel(["container", "attach", "tty-none"]);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stdout, /first/);
  assert.match(r.stderr, /second/);
  ok(["container", "rm", "tty-none"]);
});
