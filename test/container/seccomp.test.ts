import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  compileSeccomp,
  encodeProgram,
  RET,
  runFilter,
} from "../../src/container/seccomp.js";
import type { Seccomp } from "../../src/container/spec.js";
import { SYSCALLS_I386, SYSCALLS_X86_64 } from "../../src/container/syscalls.js";

const NR = SYSCALLS_X86_64;
const x64 = (name: string, args: bigint[] = []) => ({ nr: NR[name]!, arch: AUDIT_ARCH_X86_64, args });
const EACCES = 13;

function run(profile: Seccomp, data: { nr: number; arch: number; args?: bigint[] }): number {
  return runFilter(compileSeccomp(profile).program, data);
}

test("seccomp: listed syscalls get their action, others the default", () => {
  const p: Seccomp = {
    defaultAction: "SCMP_ACT_ERRNO",
    syscalls: [{ names: ["read", "write", "exit_group"], action: "SCMP_ACT_ALLOW" }],
  };
  assert.equal(run(p, x64("read")), RET.ALLOW);
  assert.equal(run(p, x64("exit_group")), RET.ALLOW);
  assert.equal(run(p, x64("mkdir")), RET.ERRNO | 1, "default SCMP_ACT_ERRNO returns EPERM");
});

test("seccomp: errnoRet and defaultErrnoRet choose the errno", () => {
  const p: Seccomp = {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 38,
    syscalls: [
      { names: ["mkdir"], action: "SCMP_ACT_ERRNO", errnoRet: EACCES },
      { names: ["getpid"], action: "SCMP_ACT_ALLOW" },
    ],
  };
  assert.equal(run(p, x64("mkdir")), RET.ERRNO | EACCES);
  assert.equal(run(p, x64("chmod")), RET.ERRNO | 38);
  assert.equal(run(p, x64("getpid")), RET.ALLOW);
});

test("seccomp: kill, trap and log actions encode as the kernel expects", () => {
  const p: Seccomp = {
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [
      { names: ["reboot"], action: "SCMP_ACT_KILL_PROCESS" },
      { names: ["kexec_load"], action: "SCMP_ACT_KILL" },
      { names: ["ptrace"], action: "SCMP_ACT_TRAP" },
      { names: ["uname"], action: "SCMP_ACT_LOG" },
    ],
  };
  assert.equal(run(p, x64("reboot")), RET.KILL_PROCESS);
  assert.equal(run(p, x64("kexec_load")), RET.KILL_THREAD);
  assert.equal(run(p, x64("ptrace")), RET.TRAP);
  assert.equal(run(p, x64("uname")), RET.LOG);
  assert.equal(run(p, x64("read")), RET.ALLOW);
});

test("seccomp: argument filters compare all 64 bits with every operator", () => {
  const rule = (op: string, value: number, valueTwo?: number): Seccomp => ({
    defaultAction: "SCMP_ACT_ERRNO",
    syscalls: [
      {
        names: ["personality"],
        action: "SCMP_ACT_ALLOW",
        args: [{ index: 0, value, op, ...(valueTwo !== undefined ? { valueTwo } : {}) }],
      },
    ],
  });
  const call = (v: bigint) => x64("personality", [v]);
  const allowed = (p: Seccomp, v: bigint) => run(p, call(v)) === RET.ALLOW;
  assert.ok(allowed(rule("SCMP_CMP_EQ", 8), 8n));
  assert.ok(!allowed(rule("SCMP_CMP_EQ", 8), 8n | (1n << 32n)), "the high word takes part");
  assert.ok(allowed(rule("SCMP_CMP_NE", 8), 9n));
  assert.ok(!allowed(rule("SCMP_CMP_NE", 8), 8n));
  assert.ok(allowed(rule("SCMP_CMP_GT", 8), 1n << 32n));
  assert.ok(!allowed(rule("SCMP_CMP_GT", 8), 8n));
  assert.ok(allowed(rule("SCMP_CMP_GE", 8), 8n));
  assert.ok(!allowed(rule("SCMP_CMP_GE", 8), 7n));
  assert.ok(allowed(rule("SCMP_CMP_LT", 8), 7n));
  assert.ok(!allowed(rule("SCMP_CMP_LT", 8), 1n << 33n));
  assert.ok(allowed(rule("SCMP_CMP_LE", 8), 8n));
  assert.ok(!allowed(rule("SCMP_CMP_LE", 8), 9n));
  // clone without CLONE_NEWUSER (0x10000000): the shape of Docker's profile rule
  assert.ok(allowed(rule("SCMP_CMP_MASKED_EQ", 0x10000000, 0), 0x11n));
  assert.ok(!allowed(rule("SCMP_CMP_MASKED_EQ", 0x10000000, 0), 0x10000011n));
  assert.ok(allowed(rule("SCMP_CMP_EQ", 0xffffffff), 0xffffffffn), "-1 style values keep their low word");
});

test("seccomp: conditions on different args all hold; on one arg they are alternatives", () => {
  const and: Seccomp = {
    defaultAction: "SCMP_ACT_ERRNO",
    syscalls: [
      {
        names: ["socket"],
        action: "SCMP_ACT_ALLOW",
        args: [
          { index: 0, value: 1, op: "SCMP_CMP_EQ" },
          { index: 1, value: 2, op: "SCMP_CMP_EQ" },
        ],
      },
    ],
  };
  assert.equal(run(and, x64("socket", [1n, 2n])), RET.ALLOW);
  assert.notEqual(run(and, x64("socket", [1n, 3n])), RET.ALLOW);
  const or: Seccomp = {
    defaultAction: "SCMP_ACT_ERRNO",
    syscalls: [
      {
        names: ["personality"],
        action: "SCMP_ACT_ALLOW",
        args: [
          { index: 0, value: 0, op: "SCMP_CMP_EQ" },
          { index: 0, value: 8, op: "SCMP_CMP_EQ" },
        ],
      },
    ],
  };
  assert.equal(run(or, x64("personality", [0n])), RET.ALLOW);
  assert.equal(run(or, x64("personality", [8n])), RET.ALLOW);
  assert.notEqual(run(or, x64("personality", [4n])), RET.ALLOW);
  // a failed argument match falls through to later rules for the same call
  const fallthrough: Seccomp = {
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [
      { names: ["kill"], action: "SCMP_ACT_ALLOW", args: [{ index: 1, value: 0, op: "SCMP_CMP_EQ" }] },
      { names: ["kill"], action: "SCMP_ACT_ERRNO", errnoRet: EACCES },
    ],
  };
  assert.equal(run(fallthrough, x64("kill", [1n, 0n])), RET.ALLOW);
  assert.equal(run(fallthrough, x64("kill", [1n, 9n])), RET.ERRNO | EACCES);
});

test("seccomp: a call from an architecture not listed is killed", () => {
  const p: Seccomp = { defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_X86_64"] };
  assert.equal(run(p, { nr: 1, arch: AUDIT_ARCH_I386 }), RET.KILL_PROCESS);
  assert.equal(run(p, { nr: 1, arch: 0xc00000b7 /* aarch64 */ }), RET.KILL_PROCESS);
  assert.equal(
    run(p, { nr: 0x40000000 | NR.read!, arch: AUDIT_ARCH_X86_64 }),
    RET.KILL_PROCESS,
    "x32 calls too",
  );
  assert.equal(run(p, x64("read")), RET.ALLOW);
});

test("seccomp: i386 and x32 sections use their own numbers", () => {
  const p: Seccomp = {
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    syscalls: [{ names: ["mkdir"], action: "SCMP_ACT_ERRNO", errnoRet: EACCES }],
  };
  assert.equal(run(p, { nr: SYSCALLS_I386.mkdir!, arch: AUDIT_ARCH_I386 }), RET.ERRNO | EACCES);
  assert.equal(
    run(p, { nr: NR.mkdir!, arch: AUDIT_ARCH_I386 }),
    RET.ALLOW,
    "x86_64's mkdir number is another call on i386",
  );
  assert.equal(run(p, { nr: 0x40000000 | NR.mkdir!, arch: AUDIT_ARCH_X86_64 }), RET.ERRNO | EACCES);
});

test("seccomp: Docker-sized profiles stay within the kernel's 4096 instructions", () => {
  const names = Object.keys(NR);
  const p: Seccomp = {
    defaultAction: "SCMP_ACT_ERRNO",
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    syscalls: [{ names, action: "SCMP_ACT_ALLOW" }],
  };
  const c = compileSeccomp(p);
  assert.ok(c.program.length < 4096, `${c.program.length} instructions`);
  assert.equal(encodeProgram(c.program).length, c.program.length * 8);
  assert.equal(runFilter(c.program, x64("openat")), RET.ALLOW);
});

test("seccomp: flags and unsupported actions", () => {
  assert.equal(
    compileSeccomp({ defaultAction: "SCMP_ACT_ALLOW", flags: ["SECCOMP_FILTER_FLAG_LOG"] }).flags,
    2,
  );
  assert.throws(() => compileSeccomp({ defaultAction: "SCMP_ACT_NOTIFY" }), /not supported/);
  assert.throws(
    () => compileSeccomp({ defaultAction: "SCMP_ACT_ALLOW", flags: ["SECCOMP_FILTER_FLAG_NOPE"] }),
    /not supported/,
  );
});

test("seccomp: unknown syscall names are skipped, as runc does", () => {
  const p: Seccomp = {
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [{ names: ["no_such_call", "mkdir"], action: "SCMP_ACT_ERRNO" }],
  };
  assert.equal(run(p, x64("mkdir")), RET.ERRNO | 1);
});
