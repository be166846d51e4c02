// A history in the JSON of `temporal workflow show --output json`, as the
// History message the replayer takes. The SDK's historyFromJSON fails in this
// install ("type must be a Type"): @temporalio/common and @temporalio/proto
// each carry their own copy of protobufjs 8, so common's protojson does not
// know proto's types. Proto's own copy of protojson does.
import type { temporal } from '@temporalio/proto';
import * as proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root';

interface ProtoJson {
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): unknown;
}
// protobufjs is @temporalio/proto's own dependency, resolved from there at run time (no import names it).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const protojson = require(
  require.resolve('protobufjs/ext/protojson', { paths: [require.resolve('@temporalio/proto')] }),
) as ProtoJson;
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown }).lookupType(
  'temporal.api.history.v1.History',
);

export function historyFromJson(json: unknown): temporal.api.history.v1.IHistory {
  const h = protojson.fromJson(historyType, json, { ignoreUnknownFields: true });
  if (!h) throw new TypeError('not a Temporal history');
  return h;
}
