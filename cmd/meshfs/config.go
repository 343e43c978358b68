package main

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// configFlag names the settings file of the commands that have one.
const configFlag = "config"

// applyConfigFile fills every flag that neither the command line nor the
// environment set from the YAML file named by --config (or MESHFS_CONFIG):
// the usual order, flag > environment > file > default. Keys are flag
// names; a list sets a repeatable flag. An unknown key is an error, so a
// typo does not silently leave a default in place.
func applyConfigFile(cmd *cobra.Command) error {
	cf := cmd.Flags().Lookup(configFlag)
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	path := cf.Value.String()
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var settings map[string]any
	if err := yaml.Unmarshal(raw, &settings); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys) // one error order for one file
	for _, k := range keys {
		f := cmd.Flags().Lookup(k)
		if f == nil || k == configFlag || skipEnv(k) {
			return usageError{fmt.Errorf("config file %s: unknown setting %q (keys are daemon flag names, e.g. data-dir)", path, k)}
		}
		if f.Changed {
			continue
		}
		if err := setFromFile(cmd.Flags(), f, settings[k]); err != nil {
			return usageError{fmt.Errorf("config file %s: %s: %w", path, k, err)}
		}
	}
	return nil
}

func setFromFile(fs *pflag.FlagSet, f *pflag.Flag, v any) error {
	switch v := v.(type) {
	case nil:
		return errors.New("no value")
	case []any:
		for _, item := range v {
			if err := fs.Set(f.Name, fmt.Sprint(item)); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		return errors.New("a value, not a mapping, is expected")
	default:
		return fs.Set(f.Name, fmt.Sprint(v))
	}
}
