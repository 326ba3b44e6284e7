// A node:test reporter that writes one line per skipped test (name, file, reason) as JSON, so
// scripts/test.mjs can print, at the end of the run, what was skipped and why, grouped by reason.
export default async function* skipReporter(source) {
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const { skip, name, file } = event.data;
    if (skip === undefined || skip === false) continue;
    const reason = typeof skip === "string" && skip !== "" ? skip : "(no reason given)";
    yield `${JSON.stringify({ name, file: file ?? "", reason })}\n`;
  }
}
