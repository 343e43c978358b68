package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix starts the name of every environment variable meshfs reads.
const envPrefix = "MESHFS_"

// envName is the environment variable that sets a flag: MESHFS_ and the
// flag name upper-cased with dashes turned into underscores.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// skipEnv lists flags that make no sense to set from the environment.
// An output path from the environment would silently redirect every download.
func skipEnv(name string) bool { return name == "help" || name == "version" || name == "output" }

// bindEnv lets every flag of cmd be set from its environment variable, with
// the precedence flag > environment > default. It names the variable in the
// flag's help text, and chains a PreRunE that copies the environment into
// each flag the command line did not set. getenv is os.Getenv outside tests.
//
// Call it after all of cmd's flags are defined.
func bindEnv(cmd *cobra.Command, getenv func(string) string) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !skipEnv(f.Name) {
			f.Usage += fmt.Sprintf(" [env %s]", envName(f.Name))
		}
	})
	next := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		var err error
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if err != nil || f.Changed || skipEnv(f.Name) {
				return
			}
			v, ok := lookupEnv(getenv, envName(f.Name))
			if !ok {
				return
			}
			// Flags().Set, unlike f.Value.Set, marks the flag as changed,
			// so code that asks "was this given?" treats the environment
			// like the command line. For slice flags the first Set
			// replaces the default rather than appending to it, and the
			// value is comma-separated ("a,b") like a repeated flag.
			if e := cmd.Flags().Set(f.Name, v); e != nil {
				err = usageError{fmt.Errorf("invalid value %q for %s (--%s): %w", v, envName(f.Name), f.Name, e)}
			}
		})
		if err != nil {
			return err
		}
		if err := applyConfigFile(cmd); err != nil {
			return err
		}
		if next != nil {
			return next(cmd, args)
		}
		return nil
	}
}

// lookupEnv treats an empty variable as unset: "MESHFS_API= meshfs ls"
// then means the default, which is what a user clearing it expects.
func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}
