package main

import (
	"fmt"
	"strings"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
	"github.com/urfave/cli/v2"
)

// manPage is mlc(1), made from the command definitions by urfave/cli's
// ToManWithSection, with each command's synopsis, description and examples
// (ToMan prints only a command's usage line and flags), and the files and
// exit statuses. It changes app's commands (their UsageText): call it only
// in a process that does nothing else with app (`mlc completion man`).
func manPage(app *cli.App) (string, error) {
	dropHelpCommands(app.Commands)
	manUsage(app.Commands, "mlc")
	app.Description = markdownBlocks(app.Description)
	page, err := app.ToManWithSection(1)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(page)
	b.WriteString(".SH FILES\n")
	for _, f := range [][2]string{
		{config.SystemPath, "the policy: limits, groups, the image catalogue, GPUs (mlc limits check validates it)"},
		{"/etc/sudoers.d/mlc", "lets the members of mlc-users run mlc, and only mlc, as root; mlc re-executes itself through sudo -n"},
	} {
		fmt.Fprintf(&b, ".TP\n%s\n%s\n", roff(f[0]), roff(f[1]))
	}
	b.WriteString(".SH EXIT STATUS\n.TP\n0\nsuccess; mlc open NAME -- CMD exits with CMD's own status\n")
	for _, r := range errs.Table {
		fmt.Fprintf(&b, ".TP\n%d\n%s: %s\n", r.Code, r.Name, roff(r.What))
	}
	b.WriteString(".SH SEE ALSO\n" + roff("sudo(8), docker(1); the user guide, admin guide and config reference in the docs of mlc.") + "\n")
	return b.String(), nil
}

// manUsage gives each command without one a UsageText: its synopsis, then its
// description, which ToMan prints as a preformatted block.
func manUsage(cmds []*cli.Command, parent string) {
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		name := parent + " " + c.Name
		if c.UsageText == "" {
			synopsis := name
			if len(c.VisibleFlags()) > 0 {
				synopsis += " [flags]"
			}
			if c.ArgsUsage != "" {
				synopsis += " " + c.ArgsUsage
			}
			if len(c.Subcommands) > 0 {
				synopsis += " COMMAND"
			}
			c.UsageText = synopsis
			if d := strings.Trim(c.Description, "\n"); d != "" {
				c.UsageText += "\n\n" + d
			}
		}
		manUsage(c.Subcommands, name)
	}
}

// markdownBlocks makes the indented lines of a help text (examples) markdown
// code blocks, so that the man page keeps them on lines of their own.
func markdownBlocks(text string) string {
	var out []string
	inBlock := false
	for _, line := range strings.Split(text, "\n") {
		indented := strings.HasPrefix(line, "   ")
		switch {
		case indented && !inBlock:
			if len(out) > 0 && out[len(out)-1] != "" {
				out = append(out, "")
			}
			inBlock = true
		case !indented && inBlock && line != "":
			out = append(out, "")
			inBlock = false
		}
		if indented {
			line = " " + line
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// roff escapes text for a man page line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
