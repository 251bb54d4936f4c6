// Resolves `stepgate:playbook/<interface>@0.1.0` (what componentize-js
// links to the host) to the fakes in ./host, so stepgate.js runs in node.
export async function resolve(specifier, context, next) {
  const m = /^stepgate:playbook\/([a-z]+)@0\.1\.0$/.exec(specifier);
  if (m) return { url: new URL(`./host/${m[1]}.mjs`, import.meta.url).href, shortCircuit: true };
  return next(specifier, context);
}
