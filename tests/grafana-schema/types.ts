// The dashboard model that the pinned Grafana accepts, built from @grafana/schema's own types.
// check.mjs writes each dashboard as an object literal of type `Dashboard` (below), so that
// TypeScript's excess-property check rejects any field the schema does not declare.
import type {
  AnnotationQuery as SchemaAnnotationQuery,
  Dashboard as SchemaDashboard,
  DataQuery,
  FieldConfig,
  FieldConfigSource,
  Panel as SchemaPanel,
  RowPanel as SchemaRowPanel,
  VariableModel as SchemaVariableModel,
} from "@grafana/schema";
import type * as stat from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type * as table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as timeseries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

/**
 * The panel types this check knows, each with the option and field-config types its plugin
 * declares in @grafana/schema. A panel of any other type fails: add its types here first.
 */
interface PanelTypes {
  stat: PanelOf<"stat", stat.Options, never>;
  table: PanelOf<"table", table.Options, table.FieldConfig>;
  timeseries: PanelOf<"timeseries", timeseries.Options, timeseries.FieldConfig>;
}

/**
 * A dashboard as the pinned Grafana accepts it. `Latest` is the `schemaVersion` Grafana's migrator
 * upgrades every dashboard to (check.mjs reads it from the package's `defaultDashboard`: 42 for
 * Grafana 13.0) and refuses a newer one ("schema version not migrated to target version"). An
 * older one it migrates only from its MIN_VERSION up (MinimumVersionError below): 13 in the
 * migrator's own documentation, lower in some releases. 13 is the floor here.
 */
export type Dashboard<Latest extends number> = Json<
  Omit<SchemaDashboard, "panels" | "schemaVersion" | "annotations" | "templating">
> & {
  schemaVersion: Exclude<UpTo<Latest>, UpTo<12>>;
  panels?: Array<PanelTypes[keyof PanelTypes] | RowPanel>;
  annotations?: { list?: AnnotationQuery[] };
  templating?: { list?: VariableModel[] };
};

/**
 * The classic (v1) types stop at the generic part of an annotation; the package's v2 schema keeps
 * the datasource's own options as `legacyOptions`. For Prometheus those are the ones its
 * annotation support reads; Grafana moves `expr` and `step` into `target` when it loads them.
 */
type AnnotationQuery = Json<Omit<SchemaAnnotationQuery, "target">> & {
  target?: Json<DataQuery> & Record<string, unknown>;
  expr?: string;
  step?: string;
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
};

/** `definition`, the query as shown, is in the v2 schema's QueryVariableSpec, not in the v1 type. */
type VariableModel = Json<SchemaVariableModel> & { definition?: string };

type RowPanel = Json<Omit<SchemaRowPanel, "panels">> & {
  /** The panels of a collapsed row; an expanded row's panels follow it at the top level. */
  panels: Array<PanelTypes[keyof PanelTypes]>;
};

/**
 * A panel of plugin `T`. The schema marks most plugin options as required, but Grafana fills any
 * missing one from the plugin's defaults: options and custom field config are checked for names
 * and values, not for presence. `Custom = never` is a plugin without custom field config.
 */
type PanelOf<T extends string, Options, Custom> = Json<Omit<SchemaPanel, "type" | "options" | "fieldConfig">> & {
  type: T;
  options?: Defaulted<Options>;
  fieldConfig?: Json<Omit<FieldConfigSource, "defaults">> & {
    defaults: Json<Omit<FieldConfig, "custom">> & ([Custom] extends [never] ? {} : { custom?: Defaulted<Custom> });
  };
};

/** A schema type as JSON holds it: each enum becomes the values it stands for. */
type Json<T> = T extends string
  ? `${T}`
  : T extends number
    ? `${T}` extends `${infer N extends number}` ? N : never
    : T extends boolean | null | undefined
      ? T
      : T extends ReadonlyArray<infer E>
        ? Array<Json<E>>
        : T extends object
          ? { [K in keyof T]: Json<T[K]> }
          : T;

/** Like Json, with every property optional at every depth (the plugin supplies defaults). */
type Defaulted<T> = T extends string
  ? `${T}`
  : T extends number
    ? `${T}` extends `${infer N extends number}` ? N : never
    : T extends boolean | null | undefined
      ? T
      : T extends ReadonlyArray<infer E>
        ? Array<Defaulted<E>>
        : T extends object
          ? { [K in keyof T]?: Defaulted<T[K]> }
          : T;

/** The integers from 0 to `N`. */
type UpTo<N extends number, Seen extends number[] = []> = Seen["length"] extends N
  ? Seen[number] | N
  : UpTo<N, [...Seen, Seen["length"]]>;
