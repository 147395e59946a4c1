// Validates Camunda Modeler element templates against the official JSON schema
// (@camunda/element-templates-json-schema), as Modeler reads them. Usage:
//   node scripts/validate-element-templates.mjs NODE_MODULES_DIR FILE…
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [modules, ...files] = process.argv.slice(2);
// The packages are installed outside the repository, so they are required from there.
const require = createRequire(join(modules, 'noop.js'));
const Ajv = require('ajv');
const schema = require('@camunda/element-templates-json-schema/resources/schema.json');
// The schema carries keywords for its own error messages that Ajv does not know.
const validate = new Ajv({ strict: false, allErrors: true }).compile(schema);
let invalid = 0;
for (const file of files) {
  const templates = JSON.parse(readFileSync(file, 'utf8'));
  if (validate(templates)) {
    console.log(`${file}: valid`);
  } else {
    invalid += 1;
    for (const e of validate.errors) console.error(`${file}: ${e.instancePath || '/'} ${e.message}`);
  }
}
process.exit(invalid ? 1 : 0);
