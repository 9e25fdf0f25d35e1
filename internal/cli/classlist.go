package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

// runnerClassList is `cove runner classes`: the classes the active runners
// offer, each with its resource definition.
func runnerClassList() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "classes",
		Short: "List the environment classes runners offer, with their CPU, memory, pids, disk and IO limits",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Runners.ListEnvironmentClasses(cmd.Context(), connect.NewRequest(&covev1.ListEnvironmentClassesRequest{}))
			if err != nil {
				return err
			}
			switch output {
			case "json":
				b, err := protojson.MarshalOptions{Multiline: true}.Marshal(resp.Msg)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			case "text":
				return printClasses(cmd.OutOrStdout(), resp.Msg.GetClasses())
			}
			return fmt.Errorf("--output %q: want text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printClasses prints one line per class. Runners define their classes:
// their text is remote, made safe to print.
func printClasses(w io.Writer, cs []*covev1.EnvironmentClass) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCPUS\tBURST\tMEMORY\tRECLAIM AT\tSWAP\tPIDS\tDISK\tIO (read, write)\tEGRESS")
	for _, c := range cs {
		burst := "host"
		if c.GetCpuBurst() > 0 {
			burst = strconv.Itoa(int(c.GetCpuBurst()))
		}
		high := "-"
		if p := c.GetMemoryHighPercent(); p > 0 && p < 100 {
			high = strconv.Itoa(int(p)) + "%"
		}
		swap := "none"
		switch s := c.GetSwapBytes(); {
		case s == -1:
			swap = "unlimited"
		case s > 0:
			swap = bytesIEC(s)
		}
		pids := "unlimited"
		if c.GetPids() > 0 {
			pids = strconv.Itoa(int(c.GetPids()))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", termsafe.Line(c.GetId()), c.GetCpus(), burst, sizeOrNone(c.GetMemoryBytes()),
			high, swap, pids, sizeOrNone(c.GetDiskBytes()), classIO(c), termsafe.Line(c.GetEgressPolicy()))
	}
	return tw.Flush()
}

func sizeOrNone(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return bytesIEC(n)
}

// classIO is a class's block IO limits, "unlimited" when it has none.
func classIO(c *covev1.EnvironmentClass) string {
	rate := func(bps, iops int64) string {
		var p []string
		if bps > 0 {
			p = append(p, bytesIEC(bps)+"/s")
		}
		if iops > 0 {
			p = append(p, strconv.FormatInt(iops, 10)+" IOPS")
		}
		if len(p) == 0 {
			return "-"
		}
		return strings.Join(p, " ")
	}
	if c.GetIoReadBps() == 0 && c.GetIoWriteBps() == 0 && c.GetIoReadIops() == 0 && c.GetIoWriteIops() == 0 {
		return "unlimited"
	}
	return rate(c.GetIoReadBps(), c.GetIoReadIops()) + ", " + rate(c.GetIoWriteBps(), c.GetIoWriteIops())
}
