import assert from "node:assert/strict";
import { test } from "node:test";
import { logicalLines, parseBuildFile, substitute, words } from "../../../src/container/build/dockerfile.js";
import { ImageError } from "../../../src/container/image/errors.js";

test("build file: continuation lines join and comments drop", () => {
  const lines = logicalLines("# c\nFROM busybox\nRUN echo a \\\n  && echo b\n\n");
  assert.deepEqual(lines, [
    [2, "FROM busybox"],
    [3, "RUN echo a   && echo b"],
  ]);
});

test("build file: exec and shell forms of RUN, CMD and ENTRYPOINT", () => {
  const steps = parseBuildFile(
    'FROM busybox\nRUN ["echo","x"]\nRUN echo $HOME\nCMD ["httpd","-f"]\nENTRYPOINT /bin/sh',
  );
  assert.deepEqual(steps[1], {
    kind: "RUN",
    line: 2,
    text: 'RUN ["echo","x"]',
    shell: false,
    args: ["echo", "x"],
  });
  assert.deepEqual(steps[2], {
    kind: "RUN",
    line: 3,
    text: "RUN echo $HOME",
    shell: true,
    args: ["echo $HOME"],
  });
  assert.equal(steps[3]!.kind === "CMD" && steps[3]!.shell, false);
  assert.equal(steps[4]!.kind === "ENTRYPOINT" && steps[4]!.shell, true);
});

test("build file: ARG and ENV substitute in later instructions, build args override defaults", () => {
  const text =
    // biome-ignore lint/suspicious/noTemplateCurlyInString: build-file syntax, not a template
    "ARG BASE=busybox\nFROM $BASE\nARG DIR=/srv\nENV APP=${DIR}/app X=1\nWORKDIR $APP\nCOPY a b $APP/\nEXPOSE 80 443/tcp";
  const steps = parseBuildFile(text, new Map([["DIR", "/opt"]]));
  assert.equal(steps[1]!.kind === "FROM" && steps[1]!.image, "busybox");
  assert.deepEqual(steps[3]!.kind === "ENV" && steps[3]!.pairs, [
    ["APP", "/opt/app"],
    ["X", "1"],
  ]);
  assert.equal(steps[4]!.kind === "WORKDIR" && steps[4]!.value, "/opt/app");
  assert.deepEqual(steps[5]!.kind === "COPY" && [steps[5]!.sources, steps[5]!.dest], [
    ["a", "b"],
    "/opt/app/",
  ]);
  assert.deepEqual(steps[6]!.kind === "EXPOSE" && steps[6]!.ports, ["80", "443/tcp"]);
});

// biome-ignore lint/suspicious/noTemplateCurlyInString: build-file syntax, not a template
test("build file: ${VAR:-default} and ${VAR:+alt} and escaped dollars", () => {
  const vars = new Map([["A", "1"]]);
  // biome-ignore lint/suspicious/noTemplateCurlyInString: build-file syntax, not a template
  assert.equal(substitute("${A:-x} ${B:-y} ${A:+z} ${B:+w} \\$A", vars), "1 y z  $A");
});

test("build file: words keep quoted spaces", () => {
  assert.deepEqual(words(`a "b c" d\\ e 'f g'`), ["a", "b c", "d e", "f g"]);
});

test("build file: errors name the line and the problem", () => {
  assert.throws(
    () => parseBuildFile("RUN echo"),
    (e: unknown) => e instanceof ImageError && /line 1: the first instruction must be FROM/.test(e.message),
  );
  assert.throws(() => parseBuildFile("FROM busybox\nFETCH x"), /line 2: unknown instruction "FETCH"/);
  assert.throws(() => parseBuildFile("FROM busybox\nADD https://example.com/x /x"), /URL/);
  assert.throws(() => parseBuildFile("FROM busybox\nEXPOSE http"), /EXPOSE: "http"/);
  assert.throws(() => parseBuildFile("# nothing\n"), /no FROM/);
});
