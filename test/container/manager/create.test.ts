import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Manager } from "../../../src/container/manager/manager.js";
import { UsageError } from "../../../src/errors.js";

/** Manager.create refuses bad run requests before it looks for the image (no root needed). */

const root = mkdtempSync(join(tmpdir(), "vessel-create-"));
after(() => rmSync(root, { recursive: true, force: true }));
const m = new Manager(root);

function refused(req: Partial<Parameters<Manager["create"]>[0]>, code: string, message: RegExp): void {
  assert.throws(
    () => m.create({ image: "busybox", args: ["true"], ...req }),
    (err: unknown) => err instanceof UsageError && err.code === code && message.test(err.message),
  );
}

test("run refuses -p without the bridge network, and a host port published twice", () => {
  refused({ ports: ["8080:80"], network: "host" }, "BAD_PORT", /-p needs the bridge network/);
  refused({ ports: ["8080:80"], network: "none" }, "BAD_PORT", /--network none/);
  refused({ ports: ["8080:80", "8080:81"] }, "BAD_PORT", /host port 8080 is published twice/);
});

test("run refuses a --pids-limit that is not a number, and --rm with --restart", () => {
  refused({ pidsLimit: "many" }, "BAD_PIDS", /invalid --pids-limit "many"/);
  refused({ autoRemove: true, restart: "always" }, "BAD_RESTART", /--rm and --restart/);
});
