import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { bootId, type ContainerConfig, ContainerStore } from "../../../src/container/manager/state.js";

function config(id: string, name: string): ContainerConfig {
  return {
    id,
    name,
    image: "busybox",
    imageId: "sha256:00",
    created: new Date().toISOString(),
    args: ["true"],
    env: [],
    cwd: "/",
    user: "",
    tty: false,
    interactive: false,
    detach: true,
    autoRemove: false,
    readOnly: false,
    network: "none",
    ports: [],
    volumes: [],
    restart: { name: "no", maxRetries: 0 },
    hostname: id.slice(0, 12),
    stopSignal: "SIGTERM",
    labels: {},
  };
}

test("a container recorded as running before a reboot, or whose monitor died, reads as exited", () => {
  const root = mkdtempSync(join(tmpdir(), "vessel-state-"));
  try {
    const store = new ContainerStore(root);
    const a = store.newId();
    const b = store.newId();
    store.writeConfig(config(a, "before-reboot"));
    store.writeConfig(config(b, "dead-monitor"));
    store.writeState(a, {
      status: "running",
      pid: 4242,
      monitorPid: process.pid,
      restartCount: 0,
      bootId: "another-boot",
    });
    store.writeState(b, {
      status: "running",
      pid: 4243,
      monitorPid: 2 ** 22 + 17,
      restartCount: 0,
      bootId: bootId(),
    });
    assert.equal(store.state(a).status, "exited");
    assert.equal(store.state(a).pid, undefined);
    assert.equal(store.state(b).status, "exited");
    store.writeState(b, { status: "running", monitorPid: process.pid, restartCount: 0, bootId: bootId() });
    assert.equal(store.state(b).status, "running");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("containers resolve by name, full id and unique prefix", () => {
  const root = mkdtempSync(join(tmpdir(), "vessel-state-"));
  try {
    const store = new ContainerStore(root);
    const id = store.newId();
    store.writeConfig(config(id, "web"));
    assert.equal(store.resolve("web"), id);
    assert.equal(store.resolve(id), id);
    assert.equal(store.resolve(id.slice(0, 6)), id);
    assert.throws(() => store.resolve("nope"), /no such container: "nope"/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
