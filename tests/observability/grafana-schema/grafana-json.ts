// Grafana's schema (@grafana/schema) in the form a dashboard's JSON takes, for `satisfies`.
import type { FieldConfigSource, Panel } from '@grafana/schema';

// Its enums are TypeScript string enums, which are nominal: the JSON text "absolute" is not a
// `ThresholdsMode` to tsc although it is that enum's value. JsonOf<T> writes each string enum as
// the union of its values (`${T}`) and keeps every other rule: required fields, field types, and
// no unknown fields in an object literal.
export type JsonOf<T> =
  T extends string ? `${T}` :
  T extends readonly (infer U)[] ? JsonOf<U>[] :
  T extends object ? { [K in keyof T]: JsonOf<T[K]> } :
  T;

// A panel with its plugin's own options and field config. (The schema's `Panel<TOptions>` does
// not use TOptions: its `options` stays `Record<string, unknown>`.)
export type PanelOf<TOptions, TFieldConfig = Record<string, unknown>> =
  Omit<Panel, 'options' | 'fieldConfig'> & {
    options?: TOptions;
    fieldConfig?: FieldConfigSource<TFieldConfig>;
  };
