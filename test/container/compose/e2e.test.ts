import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { REPO } from "../fixtures.js";
import { e2eSuite, eventually, freePort } from "./cli_harness.js";

/**
 * `vessel compose` end to end, as root, in a private VESSEL_ROOT: a two-service application (a
 * web server built from a build file, and an API service the web one reaches by its service
 * name on the project's network), with published ports, a bind and a named volume, environment
 * in both forms, command, depends_on with service_healthy, restart; ps, logs, down and down -v;
 * an attached up stopped with Ctrl-C; and bad files and port clashes that must start nothing.
 */

const h = e2eSuite("compose-e2e");
const need = h.need;

function fetchPage(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port, path: "/", timeout: 3000 }, (res) => {
      let body = "";
      res.on("data", (b: Buffer) => (body += b.toString()));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

/** A project directory: compose.yaml plus the files named. */
function project(name: string, compose: string, files: Record<string, string> = {}): string {
  const dir = join(mkdtempSync(join(h.root, "proj-")), name);
  mkdirSync(dir);
  writeFileSync(join(dir, "compose.yaml"), compose);
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(join(dir, f, ".."), { recursive: true });
    writeFileSync(join(dir, f), text);
  }
  return dir;
}

const networks = async () => (await h.ok(["network", "ls"])).split("\n").slice(1).join("\n");
const containers = async () => (await h.ok(["container", "ps", "-a"])).split("\n").slice(1).join("\n");

test("compose up -d: build and image services, ports, volumes, environment, depends_on healthy, names between services", async (t) => {
  if (!need(t)) return;
  const port = await freePort();
  const dir = project(
    "shop",
    `services:
  web:
    image: busybox
    command: httpd -f -v -p 80 -h /srv
    ports:
      - "127.0.0.1:${port}:80"
    volumes:
      - ./site:/srv:ro
      - data:/data
    environment:
      - MODE=test
      - GREETING=hello world
    depends_on:
      api:
        condition: service_healthy
    restart: unless-stopped
  api:
    build:
      context: ./api
      args:
        ANSWER: "42"
    environment:
      ROLE: backend
volumes:
  data:
`,
    {
      "site/index.html": "<h1>shop front</h1>\n",
      "api/Dockerfile": `FROM busybox
ARG ANSWER
RUN mkdir /www && echo "answer $ANSWER" > /www/index.html
HEALTHCHECK --interval=1s --retries=3 CMD wget -q -O /dev/null http://127.0.0.1:8000/
CMD ["httpd", "-f", "-p", "8000", "-h", "/www"]
`,
    },
  );
  const up = await h.vessel(["compose", "up", "-d"], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(up.code, 0, up.stderr);
  // the API is healthy before the web service starts (depends_on: service_healthy)
  const order = [
    "Network shop_default  Created",
    "Container shop-api-1  Started",
    "Container shop-web-1  Started",
  ];
  const at = order.map((l) => up.stderr.indexOf(l));
  assert.ok(
    at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1]!)),
    up.stderr,
  );
  assert.equal(await eventually(() => fetchPage(port)), "<h1>shop front</h1>\n");
  // the web container reaches the API by its service name on the project's network
  assert.equal(
    await h.ok(["container", "exec", "shop-web-1", "wget", "-q", "-O-", "http://api:8000/"]),
    "answer 42\n",
  );
  assert.equal(
    await h.ok(["container", "exec", "shop-web-1", "sh", "-c", 'echo "$MODE/$GREETING"']),
    "test/hello world\n",
  );
  assert.equal(await h.ok(["container", "exec", "shop-api-1", "sh", "-c", "echo $ROLE"]), "backend\n");
  await h.ok(["container", "exec", "shop-web-1", "sh", "-c", "echo kept > /data/file"]);
  const inspect = JSON.parse(await h.ok(["container", "inspect", "shop-web-1"]))[0];
  assert.equal(inspect.HostConfig.RestartPolicy.Name, "always", "unless-stopped runs as always");
  assert.equal(inspect.Config.Labels["com.docker.compose.service"], "web");
  const ps = await h.ok(["compose", "ps"], { cwd: dir });
  assert.match(ps, /shop-api-1\s+shop-api\s+api\s+.*Up .*\(healthy\)/);
  assert.match(ps, new RegExp(`shop-web-1\\s+busybox\\s+web\\s+.*Up .*127\\.0\\.0\\.1:${port}->80/tcp`));
  // httpd -v logs to stderr: compose logs keeps the stream
  const logs = await h.vessel(["compose", "logs", "web"], { cwd: dir });
  assert.match(logs.stderr, /^shop-web-1 {2}\| .*response:200/m);
  assert.doesNotMatch(logs.stdout + logs.stderr, /shop-api-1/, "only the service asked for");
  // a second up keeps what runs unchanged
  const again = await h.vessel(["compose", "up", "-d"], { cwd: dir });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /Container shop-api-1 {2}Running/);
  assert.match(again.stderr, /Container shop-web-1 {2}Running/);
  // down removes containers and network; the named volume stays until down -v
  const down = await h.vessel(["compose", "down", "-t", "1"], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(down.code, 0, down.stderr);
  assert.doesNotMatch(await containers(), /shop-/);
  assert.doesNotMatch(await networks(), /shop_default/);
  assert.equal(readFileSync(join(h.root, "volumes", "shop_data", "_data", "file"), "utf8"), "kept\n");
  await h.ok(["compose", "up", "-d"], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(await h.ok(["container", "exec", "shop-web-1", "cat", "/data/file"]), "kept\n");
  await h.ok(["compose", "down", "-v", "-t", "1"], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(existsSync(join(h.root, "volumes", "shop_data")), false, "down -v removes the named volume");
});

test("compose up attached: the services' output with their names; Ctrl-C stops them", async (t) => {
  if (!need(t)) return;
  const dir = project(
    "talk",
    `services:
  ticker:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo tick-from-$$HOSTNAME; while true; do sleep 0.2; done"]
`,
  );
  const child = spawn(process.execPath, [join(REPO, "bin/vessel.js"), "compose", "up"], {
    cwd: dir,
    env: h.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number>((r) => child.on("close", (c) => r(c ?? -1)));
  try {
    await eventually(() => assert.match(out, /^talk-ticker-1 {2}\| tick-from-/m), 30_000);
    child.kill("SIGINT");
    assert.equal(await exited, 0, out);
    assert.match(out, /talk-ticker-1 exited with code 0/);
    assert.match(await h.ok(["compose", "ps", "-a"], { cwd: dir }), /talk-ticker-1 .*Exited \(0\)/);
  } finally {
    child.kill("SIGKILL");
    await h.vessel(["compose", "down", "-t", "1"], { cwd: dir });
  }
});

test("compose -f FILE -p NAME from another directory; logs -f follows until the services exit", async (t) => {
  if (!need(t)) return;
  const dir = project(
    "ignored-name",
    'services:\n  job:\n    image: busybox\n    command: ["sh", "-c", "echo one; sleep 1; echo two"]\n',
  );
  const file = join(dir, "compose.yaml");
  const elsewhere = mkdtempSync(join(h.root, "cwd-"));
  await h.ok(["compose", "-f", file, "-p", "Custom_1", "up", "-d"], { cwd: elsewhere });
  assert.match(
    await h.ok(["container", "ps", "-a"]),
    /custom_1-job-1/,
    "the project name is -p's, lower-cased",
  );
  // ps and logs find the project by -p alone (no compose file in this directory)
  const logs = await h.vessel(["compose", "-p", "custom_1", "logs", "-f"], {
    cwd: elsewhere,
    timeoutMs: 30_000,
  });
  assert.equal(logs.code, 0, logs.stderr);
  assert.equal(logs.stdout, "custom_1-job-1  | one\ncustom_1-job-1  | two\n");
  assert.match(
    await h.ok(["compose", "-p", "custom_1", "ps", "-a"], { cwd: elsewhere }),
    /custom_1-job-1 .*Exited \(0\)/,
  );
  await h.ok(["compose", "-p", "custom_1", "down"], { cwd: elsewhere });
  assert.equal(await h.ok(["compose", "-p", "custom_1", "ps", "-a", "-q"], { cwd: elsewhere }), "");
});

test("bad compose files: unknown keys and port clashes name the key and line, and start nothing", async (t) => {
  if (!need(t)) return;
  const cases: [string, RegExp][] = [
    [
      "services:\n  web:\n    image: busybox\n    networks: [front]\n",
      /compose.yaml line 4: services.web.networks: unknown key "networks"/,
    ],
    [
      "services:\n  a:\n    image: busybox\n    ports: ['18123:80']\n  b:\n    image: busybox\n    ports: ['18123:81']\n",
      /line 7: services.b.ports: host port 18123\/tcp is already published by service "a" \(line 4\)/,
    ],
    ["services:\n  a:\n    image: nosuchimage\n", /service "a": no image "nosuchimage" here/],
  ];
  for (const [file, re] of cases) {
    const dir = project("bad", file);
    const r = await h.vessel(["compose", "up", "-d"], { cwd: dir });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /Created|Started/);
  }
  // a host port already taken on this host: found before any container is made
  const held = createServer();
  const port = await freePort();
  await new Promise<void>((r) => held.listen(port, "0.0.0.0", r));
  try {
    const dir = project(
      "clash",
      `services:\n  first:\n    image: busybox\n    command: sleep 60\n  second:\n    image: busybox\n    command: sleep 60\n    ports: ["${port}:80"]\n    depends_on: [first]\n`,
    );
    const r = await h.vessel(["compose", "up", "-d"], { cwd: dir });
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `service "second" \\(compose file line 8\\): host port 0\\.0\\.0\\.0:${port}/tcp is in use on this host`,
      ),
    );
    assert.doesNotMatch(await containers(), /clash-/);
    assert.doesNotMatch(await networks(), /clash_default/);
  } finally {
    held.close();
  }
  // a service that fails to start: what this up started goes again
  const dir = project(
    "broken",
    "services:\n  ok:\n    image: busybox\n    command: sleep 60\n  broken:\n    image: busybox\n    command: /no/such/program\n    depends_on: [ok]\n",
  );
  const r = await h.vessel(["compose", "up", "-d"], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /service "broken" failed to start/);
  assert.match(r.stderr, /Removed what this up had started \(2 container\(s\) and the network\)/);
  assert.doesNotMatch(await containers(), /broken-/);
  assert.doesNotMatch(await networks(), /broken_default/);
});
