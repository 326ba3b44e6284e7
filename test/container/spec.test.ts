import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { defaultSpec } from "../../src/container/default_spec.js";
import { SpecError } from "../../src/container/errors.js";
import { loadSpec, type Spec, validateSpec } from "../../src/container/spec.js";

function problems(spec: unknown): string[] {
  try {
    validateSpec(spec);
  } catch (err) {
    assert.ok(err instanceof SpecError, `expected SpecError, got ${err}`);
    return (err.details.problems as string[]) ?? [];
  }
  return [];
}

function edited(edit: (s: Spec) => void): Spec {
  const s = defaultSpec();
  edit(s);
  return s;
}

test("the spec `vessel-runc spec` writes is valid", () => {
  assert.deepEqual(problems(defaultSpec()), []);
  assert.deepEqual(problems(defaultSpec({ rootless: true })), []);
});

test("spec validation rejects a config that is not an object", () => {
  assert.throws(() => validateSpec([]), /must be a JSON object/);
});

test("spec validation names every problem at once", () => {
  const p = problems(
    edited((s) => {
      s.ociVersion = "";
      s.process!.cwd = "relative";
      s.process!.args = [];
    }),
  );
  assert.equal(p.length, 3);
  assert.match(p.join("\n"), /ociVersion/);
  assert.match(p.join("\n"), /process.cwd.*absolute.*"relative"/);
  assert.match(p.join("\n"), /process.args/);
});

test("spec validation rejects unknown capabilities, rlimits, namespaces and duplicates", () => {
  const p = problems(
    edited((s) => {
      s.process!.capabilities!.bounding!.push("CAP_FLY");
      s.process!.rlimits = [
        { type: "RLIMIT_WINGS", soft: 1, hard: 1 },
        { type: "RLIMIT_NOFILE", soft: 10, hard: 5 },
      ];
      s.linux!.namespaces!.push({ type: "pid" }, { type: "bogus" as "pid" });
    }),
  ).join("\n");
  assert.match(p, /unknown capability "CAP_FLY"/);
  assert.match(p, /unknown rlimit type "RLIMIT_WINGS"/);
  assert.match(p, /soft \(10\) and hard \(5\)/);
  assert.match(p, /namespace "pid" is listed twice/);
  assert.match(p, /unknown namespace type "bogus"/);
});

test("spec validation requires mappings with a new user namespace and a uts namespace for hostname", () => {
  const p = problems(
    edited((s) => {
      s.linux!.namespaces = s.linux!.namespaces!.filter((n) => n.type !== "uts");
      s.linux!.namespaces!.push({ type: "user" });
    }),
  ).join("\n");
  assert.match(p, /needs linux.uidMappings and linux.gidMappings/);
  assert.match(p, /"hostname" needs a "uts" namespace/);
  const q = problems(edited((s) => (s.linux!.uidMappings = [{ containerID: 0, hostID: 0, size: 1 }]))).join(
    "\n",
  );
  assert.match(q, /mappings need a "user" namespace/);
});

test("spec validation refuses sysctls that are not namespaced", () => {
  const p = problems(
    edited((s) => (s.linux!.sysctl = { "kernel.panic": "1", "net.ipv4.ip_forward": "1" })),
  ).join("\n");
  assert.match(p, /"kernel.panic" is not namespaced/);
  assert.doesNotMatch(p, /ip_forward/);
  const q = problems(
    edited((s) => {
      s.linux!.namespaces = s.linux!.namespaces!.filter((n) => n.type !== "network");
      s.linux!.sysctl = { "net.ipv4.ip_forward": "1" };
    }),
  ).join("\n");
  assert.match(q, /needs a network namespace/);
});

test("spec validation checks mounts, hooks, devices and seccomp", () => {
  const p = problems(
    edited((s) => {
      s.mounts!.push({ destination: "relative/dir", type: "tmpfs" });
      s.hooks = { prestart: [{ path: "hook.sh" }], sometime: [] } as NonNullable<Spec["hooks"]>;
      s.linux!.devices = [{ type: "x" as "c", path: "/etc/passwd", major: 1, minor: 1 }];
      s.linux!.seccomp = {
        defaultAction: "SCMP_ACT_EXPLODE",
        architectures: ["SCMP_ARCH_VAX"],
        syscalls: [
          { names: ["read"], action: "SCMP_ACT_ALLOW", args: [{ index: 7, value: 1, op: "SCMP_CMP_ABOUT" }] },
        ],
      };
    }),
  ).join("\n");
  for (const re of [
    /mounts\[\d+\].destination "relative\/dir" must be absolute/,
    /hooks.prestart: path "hook.sh" must be absolute/,
    /unknown hook "sometime"/,
    /type "x" is not c, b, u or p/,
    /device path "\/etc\/passwd" must be under \/dev/,
    /defaultAction "SCMP_ACT_EXPLODE"/,
    /architecture "SCMP_ARCH_VAX"/,
    /arg index 7/,
    /operator "SCMP_CMP_ABOUT"/,
  ])
    assert.match(p, re);
});

test("loadSpec explains a missing config, bad JSON and a missing rootfs", () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-spec-"));
  try {
    assert.throws(() => loadSpec(dir), /config.json does not exist.*vessel-runc spec/);
    writeFileSync(join(dir, "config.json"), "{ not json");
    assert.throws(() => loadSpec(dir), /is not valid JSON/);
    writeFileSync(join(dir, "config.json"), JSON.stringify(defaultSpec()));
    assert.throws(() => loadSpec(dir), /root.path "rootfs" does not exist/);
    mkdirSync(join(dir, "rootfs"));
    assert.equal(loadSpec(dir).root?.path, "rootfs");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
