import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  type Compat32Regs,
  KvmOracle,
  kvmOracleSkipReason,
  ORACLE_CODE_ADDR,
  ORACLE_DATA_ADDR,
} from "../../../src/engines/kvm/oracle.js";
import { ORACLE_KERNEL_BASE64 } from "../../../src/engines/kvm/payloads/oracle_kernel.js";
import { INCLUDE_DIR } from "./helpers.js";

const skip = kvmOracleSkipReason();
let oracle: KvmOracle | undefined;
async function get(): Promise<KvmOracle> {
  oracle ??= await KvmOracle.open();
  return oracle;
}
after(async () => {
  await oracle?.close();
});

const regs = (r: Partial<Compat32Regs> = {}): Compat32Regs => ({
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  esi: 0,
  edi: 0,
  ebp: 0,
  esp: ORACLE_DATA_ADDR + 0x1000,
  ...r,
});
/** CF PF AF ZF SF OF: the arithmetic flags to compare. */
const ARITH = 0x8d5;

test("oracle: the committed kernel bytes are what nasm makes of oracle_kernel.asm", (t) => {
  if (spawnSync("nasm", ["-v"], { stdio: "ignore" }).status !== 0) return t.skip("nasm is not installed");
  const out = join(mkdtempSync(join(tmpdir(), "oracle-")), "k.bin");
  const r = spawnSync("nasm", [
    "-f",
    "bin",
    "-I",
    `${INCLUDE_DIR}/`,
    "-o",
    out,
    join(INCLUDE_DIR, "oracle_kernel.asm"),
  ]);
  assert.equal(r.status, 0, String(r.stderr));
  assert.equal(
    readFileSync(out).toString("base64"),
    ORACLE_KERNEL_BASE64,
    "run node scripts/gen-oracle-kernel.mjs",
  );
});

test("oracle: 32-bit ADD in ring 3 gives the hardware's result and flags", { skip }, async () => {
  const o = await get();
  // add eax, ebx (01 d8): 0x7fffffff + 1 overflows into the sign bit: OF SF AF PF set, ZF CF clear
  const r = o.run(new Uint8Array([0x01, 0xd8]), { regs: regs({ eax: 0x7fffffff, ebx: 1 }), eflags: 0 });
  assert.equal(r.fault, undefined);
  assert.equal(r.regs.eax, 0x80000000);
  assert.equal(r.eflags & ARITH, 0x800 | 0x80 | 0x10 | 0x4);
});

test("oracle: the snippet runs in a 32-bit code segment (PUSH moves ESP by 4) and writes its data window", {
  skip,
}, async () => {
  const o = await get();
  // mov [0x500000], ebx (89 1d 00 00 50 00); push ebx (53)
  const r = o.run(new Uint8Array([0x89, 0x1d, 0x00, 0x00, 0x50, 0x00, 0x53]), {
    regs: regs({ ebx: 0x11223344 }),
    eflags: 0,
  });
  assert.equal(r.fault, undefined);
  assert.equal(r.regs.esp, ORACLE_DATA_ADDR + 0x1000 - 4);
  assert.deepEqual([...r.data.subarray(0, 4)], [0x44, 0x33, 0x22, 0x11]);
  assert.deepEqual([...r.data.subarray(0xffc)], [0x44, 0x33, 0x22, 0x11]);
});

test("oracle: the snippet's initial flags reach it (ADC uses CF)", { skip }, async () => {
  const o = await get();
  // adc eax, ebx (11 d8) with CF=1
  const r = o.run(new Uint8Array([0x11, 0xd8]), { regs: regs({ eax: 1, ebx: 2 }), eflags: 1 });
  assert.equal(r.regs.eax, 4);
});

test("oracle: faults come back with vector, error code, EIP and CR2", { skip }, async () => {
  const o = await get();
  // xor ecx, ecx; div ecx -> #DE at the DIV
  let r = o.run(new Uint8Array([0x31, 0xc9, 0xf7, 0xf1]), { regs: regs({ eax: 1 }), eflags: 0 });
  assert.deepEqual(r.fault, { vector: 0, errorCode: 0, eip: ORACLE_CODE_ADDR + 2 });
  // mov eax, [0x1000] (supervisor-only page) -> #PF, error code U=1 P=1 read
  r = o.run(new Uint8Array([0xa1, 0x00, 0x10, 0x00, 0x00]), { regs: regs(), eflags: 0 });
  assert.deepEqual(r.fault, { vector: 14, errorCode: 5, eip: ORACLE_CODE_ADDR, cr2: 0x1000 });
  // cli -> #GP(0) at CPL 3
  r = o.run(new Uint8Array([0x90, 0xfa]), { regs: regs(), eflags: 0 });
  assert.deepEqual(r.fault, { vector: 13, errorCode: 0, eip: ORACLE_CODE_ADDR + 1 });
});

test("oracle: a snippet that never ends times out, and the next one runs normally", { skip }, async () => {
  const o = await get();
  const r = o.run(new Uint8Array([0xeb, 0xfe]), { regs: regs(), eflags: 0 }, undefined, 200);
  assert.equal(r.fault?.vector, -1);
  const r2 = o.run(new Uint8Array([0x40]), { regs: regs({ eax: 41 }), eflags: 0 }); // inc eax
  assert.equal(r2.regs.eax, 42);
  assert.equal(r2.fault, undefined);
});
