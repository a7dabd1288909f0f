package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/urfave/cli/v2"
)

// completeArg asks `mlc completion` for the candidates for a command line:
//
//	mlc completion __complete -- WORD... CURRENT
//
// The first WORD is the program as typed (mlc, mlc-start, /usr/bin/mlc),
// CURRENT the word being completed (empty for a new word). It prints one
// candidate a line and nothing at all on any error.
//
// The completion scripts do not use urfave/cli's --generate-bash-completion:
// normalize moves every flag in front of the positional arguments, so that
// flag is last only on command lines with no positional argument, and
// `mlc create thesis <TAB>` would be a usage error. `--` keeps the words as
// they are through normalize, and `completion` needs no root (needsRoot), so
// commands, flags and the policy's catalogue are completed without sudo; only
// container names need root, and then mlc re-executes itself through sudo -n,
// like every other command.
const completeArg = "__complete"

// completionShells are what `mlc completion` prints scripts for.
var completionShells = []string{"bash", "zsh", "fish"}

func completionCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Completes commands, flags, your container names (start, stop, open, ...),
and for mlc create the frameworks of the lab's catalogue, then their versions.
make install and the Debian package install the scripts for everyone; to use one
in your own shell only:

Examples:
   source <(mlc completion bash)                 (in ~/.bashrc)
   mlc completion zsh > ~/.zfunc/_mlc             (with fpath+=(~/.zfunc) before compinit)
   mlc completion fish > ~/.config/fish/completions/mlc.fish`,
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) > 0 && args[0] == completeArg {
				words := args[1:]
				if len(words) > 0 && words[0] == "--" {
					words = words[1:]
				}
				for _, w := range s.candidates(c, words) {
					fmt.Fprintln(s.out, w)
				}
				return nil
			}
			if len(args) != 1 {
				return errs.New(errs.Usage, "usage: mlc completion bash|zsh|fish")
			}
			names := linkNames(c.App)
			var script string
			switch args[0] {
			case "bash":
				script = bashCompletion(names)
			case "zsh":
				script = zshCompletion(names)
			case "fish":
				var err error
				if script, err = fishCompletion(c.App, names); err != nil {
					return errs.Wrap(errs.Internal, err, "fish completion")
				}
			case "man": // hidden: the Makefile's man page
				page, err := manPage(c.App)
				if err != nil {
					return errs.Wrap(errs.Internal, err, "man page")
				}
				script = page
			default:
				return errs.New(errs.Usage, "unknown shell %q (mlc completion bash|zsh|fish)", args[0])
			}
			_, err := fmt.Fprint(s.out, script)
			return err
		},
	}
}

// linkNames are the names the scripts complete: mlc and its mlc-COMMAND
// links (every command but version and completion, as the Makefile's
// COMMANDS; a name with no link is harmless).
func linkNames(app *cli.App) []string {
	names := []string{"mlc"}
	for _, c := range app.Commands {
		if c.Hidden || c.Name == "version" || c.Name == "completion" {
			continue
		}
		names = append(names, "mlc-"+c.Name)
	}
	return names
}

// commandLine is a command line walked as normalize and the commands read it.
type commandLine struct {
	path     []string // command names, aliases resolved: ["gpu", "release"]
	leaf     *cli.Command
	pos      []string          // positional arguments
	flags    map[string]string // values given, by the flag's first name
	pending  cli.Flag          // the flag whose value is being completed
	dashdash bool              // after --
}

func walkCommandLine(app *cli.App, typed []string) commandLine {
	w := commandLine{flags: map[string]string{}}
	cmds := app.Commands
	for _, t := range typed {
		switch {
		case w.pending != nil:
			if t == "=" { // bash split --flag=value at the =
				continue
			}
			w.flags[w.pending.Names()[0]] = t
			w.pending = nil
		case w.dashdash:
			w.pos = append(w.pos, t)
		case t == "--":
			w.dashdash = true
		case strings.HasPrefix(t, "-") && t != "-":
			name, value, hasValue := strings.Cut(strings.TrimLeft(t, "-"), "=")
			f := w.findFlag(app, name)
			switch {
			case f == nil:
			case hasValue:
				w.flags[f.Names()[0]] = value
			case flagTakesValue(f):
				w.pending = f
			default:
				w.flags[f.Names()[0]] = "true"
			}
		case (w.leaf == nil || hasSubcommands(w.leaf)) && len(w.pos) == 0:
			if c := findCommand(cmds, t); c != nil {
				w.leaf, w.path, cmds = c, append(w.path, c.Name), c.Subcommands
				continue
			}
			w.pos = append(w.pos, t)
		default:
			w.pos = append(w.pos, t)
		}
	}
	return w
}

// hasSubcommands is whether c has subcommands of mlc's (urfave/cli gives
// the command being run, here completion, a help subcommand).
func hasSubcommands(c *cli.Command) bool {
	for _, sub := range c.Subcommands {
		if sub.Name != "help" {
			return true
		}
	}
	return false
}

func (w *commandLine) findFlag(app *cli.App, name string) cli.Flag {
	var flags []cli.Flag
	if w.leaf != nil {
		flags = w.leaf.Flags
	}
	for _, f := range append(flags, app.Flags...) {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func flagTakesValue(f cli.Flag) bool {
	d, ok := f.(cli.DocGenerationFlag)
	return ok && d.TakesValue()
}

// containerArg are the commands whose one argument is a container name of
// the caller's, with which of them to offer.
var containerArg = map[string]func(containers.Row) bool{
	"start":       func(r containers.Row) bool { return !containerRunning(r) },
	"stop":        containerRunning,
	"kill":        containerRunning,
	"stats":       containerRunning,
	"keepalive":   containerRunning,
	"remove":      anyContainer,
	"open":        anyContainer,
	"logs":        anyContainer,
	"protect":     anyContainer,
	"unprotect":   anyContainer,
	"gpu release": anyContainer,
}

func containerRunning(r containers.Row) bool {
	return r.State == "running" || r.State == "restarting" || r.State == "paused"
}

func anyContainer(containers.Row) bool { return true }

// candidates are the completions for words (see completeArg), sorted, each
// starting with the word being completed; nil on any error.
func (s *session) candidates(c *cli.Context, words []string) []string {
	if len(words) == 0 {
		return nil
	}
	cur := words[len(words)-1]
	typed := append([]string(nil), words[1:len(words)-1]...)
	if name, ok := strings.CutPrefix(filepath.Base(words[0]), "mlc-"); ok && name != "" {
		typed = append([]string{name}, typed...)
	}
	w := walkCommandLine(c.App, typed)
	var out []string
	switch {
	case w.dashdash:
	case w.pending != nil:
		switch w.pending.Names()[0] {
		case "image":
			if cfg := s.completionPolicy(c, w); cfg != nil {
				for _, im := range cfg.Images {
					out = append(out, im.Alias)
				}
			}
		case "server", "to":
			if cfg := s.completionPolicy(c, w); cfg != nil {
				for _, sv := range cfg.Servers {
					out = append(out, sv.Name)
				}
				if w.pending.Names()[0] == "server" && len(w.path) > 0 && w.path[0] == "create" {
					out = append(out, "any")
				}
			}
		}
	case strings.HasPrefix(cur, "-"):
		if strings.Contains(cur, "=") {
			break
		}
		flags := c.App.Flags
		if w.leaf != nil {
			flags = w.leaf.Flags
		}
		out = append(completionFlagNames(flags), "--help")
	case w.leaf == nil || hasSubcommands(w.leaf):
		if len(w.pos) > 0 {
			break
		}
		cmds := c.App.Commands
		if w.leaf != nil {
			cmds = w.leaf.Subcommands
		}
		for _, sub := range cmds {
			if !sub.Hidden && sub.Name != "help" {
				out = append(out, sub.Name)
			}
		}
	default:
		out = s.positional(c, w)
	}
	return completionMatches(out, cur)
}

func completionFlagNames(flags []cli.Flag) []string {
	var out []string
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		for _, n := range f.Names() {
			if len(n) > 1 {
				out = append(out, "--"+n)
			}
		}
	}
	return out
}

// positional completes the argument at len(w.pos) of the command w.leaf.
func (s *session) positional(c *cli.Context, w commandLine) []string {
	cmd := strings.Join(w.path, " ")
	if want, ok := containerArg[cmd]; ok {
		if len(w.pos) > 0 {
			return nil
		}
		return s.containerNames(c, w, want)
	}
	switch {
	case cmd == "completion" && len(w.pos) == 0:
		return completionShells
	case cmd == "create" && w.flags["image"] == "" && (len(w.pos) == 1 || len(w.pos) == 2):
		cfg := s.completionPolicy(c, w)
		if cfg == nil {
			return nil
		}
		var out []string
		for _, im := range cfg.Images {
			switch {
			case im.Framework == "":
			case len(w.pos) == 1:
				out = append(out, im.Framework)
			case strings.EqualFold(im.Framework, w.pos[1]) && im.Version != "":
				out = append(out, im.Version)
			}
		}
		return out
	}
	return nil
}

// completionPolicy is the policy a command would use: the session's (which,
// through sudo, is the system policy), or the --config typed on the command
// line when mlc runs with the caller's own rights; nil on any error.
func (s *session) completionPolicy(c *cli.Context, w commandLine) *config.Config {
	if f := w.flags["config"]; f != "" && c.String("config") == "" && !identity.ProcessEnv().ForUser() {
		cfg, err := config.LoadFrom(f)
		if err != nil {
			return nil
		}
		return cfg
	}
	if err := s.setup(c); err != nil {
		return nil
	}
	return s.cfg
}

// containerNames are the names of the caller's containers that want accepts
// (an admin's --user names whose); they need root, so a caller who is not
// re-executes this very completion request through sudo -n.
func (s *session) containerNames(c *cli.Context, w commandLine, want func(containers.Row) bool) []string {
	if os.Geteuid() != 0 {
		if isCompletionRequest(os.Args) {
			_ = identity.Elevate(os.Args[0], os.Args[1:]) // returns only when it failed
		}
		return nil
	}
	m, a, err := s.managerActor(c)
	if err != nil {
		return nil
	}
	if u := w.flags["user"]; u != "" && u != s.caller.User && s.caller.Admin {
		target, err := identity.Lookup(s.cfg, u)
		if err != nil {
			return nil
		}
		if a, err = containers.For(s.caller, target); err != nil {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	rows, err := m.List(ctx, a, false)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range rows {
		if want(r) {
			out = append(out, r.Name)
		}
	}
	return out
}

// isCompletionRequest is whether this process's own command line asks for
// completions (and not, say, a test binary running run()): only then may
// containerNames hand the process over to sudo.
func isCompletionRequest(args []string) bool {
	d := dispatch(args)
	for i := 1; i < len(d); i++ {
		switch a := d[i]; {
		case a == "--config":
			i++
		case strings.HasPrefix(a, "-"):
		default:
			return a == "completion" && i+1 < len(d) && d[i+1] == completeArg
		}
	}
	return false
}

// completionMatches is the unique words of list that start with prefix, sorted.
func completionMatches(list []string, prefix string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range list {
		if w != "" && strings.HasPrefix(w, prefix) && !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

func bashCompletion(names []string) string {
	return `# bash completion for mlc                                  -*- shell-script -*-
# Generated by ` + "`mlc completion bash`" + `. mlc itself prints the candidates:
#   mlc completion __complete -- WORDS... CURRENT
# (container names through sudo -n, like every mlc command).

_mlc() {
    local cur words cword prog bin line
    COMPREPLY=()
    if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
        _get_comp_words_by_ref -n =: cur words cword
    else
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        cur=${COMP_WORDS[COMP_CWORD]}
    fi
    prog=${words[0]}
    bin=$prog
    case ${prog##*/} in
    mlc-?*) bin=${prog%-*} ;;
    esac
    while IFS= read -r line; do
        [ -n "$line" ] && COMPREPLY+=("$line")
    done < <("$bin" completion __complete -- "${words[@]:0:cword}" "$cur" 2>/dev/null)
    return 0
}

complete -o default -F _mlc ` + strings.Join(names, " ") + "\n"
}

func zshCompletion(names []string) string {
	return `#compdef ` + strings.Join(names, " ") + `
# zsh completion for mlc, generated by ` + "`mlc completion zsh`" + `. mlc itself
# prints the candidates: mlc completion __complete -- WORDS... CURRENT
# (container names through sudo -n, like every mlc command).

_mlc() {
    local prog=${words[1]} bin
    local -a opts
    bin=$prog
    [[ ${prog:t} == mlc-?* ]] && bin=${prog%-*}
    opts=("${(@f)$("$bin" completion __complete -- "${(@)words[1,CURRENT]}" 2>/dev/null)}")
    opts=(${opts:#})
    if (( ${#opts} )); then
        compadd -a opts
    else
        _files
    fi
}

if [ "$funcstack[1]" = "_mlc" ]; then
    _mlc "$@"
else
    compdef _mlc ` + strings.Join(names, " ") + `
fi
`
}

// dropHelpCommands removes the help subcommand urfave/cli gave the command
// being run (the others have none: HideHelpCommand).
func dropHelpCommands(cmds []*cli.Command) {
	for _, c := range cmds {
		kept := c.Subcommands[:0]
		for _, sub := range c.Subcommands {
			if sub.Name != "help" {
				kept = append(kept, sub)
			}
		}
		c.Subcommands = kept
		dropHelpCommands(c.Subcommands)
	}
}

// fishCompletion is urfave/cli's fish script (commands and flags, with their
// descriptions) plus what only mlc knows: container names, the catalogue, and
// the mlc-COMMAND links.
func fishCompletion(app *cli.App, names []string) (string, error) {
	dropHelpCommands(app.Commands)
	static, err := app.ToFishCompletion()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	// Loaded once, for mlc or for any of its links (each link's file may be
	// this same file).
	b.WriteString("if set -q __fish_mlc_completion_loaded\n    return\nend\nset -g __fish_mlc_completion_loaded 1\n\n")
	// urfave's commands are offered with file names, and a command's
	// subcommands still after one of them: no files, and only before one.
	subs := map[string]string{
		"complete -r -c mlc -n '__fish_mlc_no_subcommand' -a '": "complete -r -c mlc -f -n '__fish_mlc_no_subcommand' -a '",
	}
	for _, c := range app.Commands {
		if !hasSubcommands(c) {
			continue
		}
		var names []string
		for _, sub := range c.Subcommands {
			names = append(names, sub.Names()...)
		}
		cond := "__fish_seen_subcommand_from " + strings.Join(c.Names(), " ")
		subs["complete -r -c mlc -n '"+cond+"' -a '"] = "complete -r -c mlc -f -n '" + cond +
			"; and not __fish_seen_subcommand_from " + strings.Join(names, " ") + "' -a '"
	}
	seen := map[string]bool{}
	for _, line := range strings.SplitAfter(static, "\n") {
		if strings.HasPrefix(line, "complete ") {
			if seen[line] { // the help and version flags come twice
				continue
			}
			seen[line] = true
			for from, to := range subs {
				if strings.HasPrefix(line, from) {
					line = to + line[len(from):]
				}
			}
			if strings.Contains(line, "`DIR`") || strings.Contains(line, "`FILE`") {
				line = strings.Replace(line, " -f ", " -F ", 1) // complete file names
			}
			// --image completes from the catalogue.
			line = strings.Replace(line, " -l image -r ", " -l image -r -a '(__fish_mlc_complete)' ", 1)
			line = strings.ReplaceAll(line, "`", "")
		}
		b.WriteString(line)
	}
	dynamic := []string{"create"}
	for path := range containerArg {
		w := walkCommandLine(app, strings.Fields(path))
		if w.leaf != nil {
			dynamic = append(dynamic, w.leaf.Names()...)
		}
	}
	sort.Strings(dynamic)
	b.WriteString(`
# Container names, the catalogue's frameworks and versions: mlc prints them
# (container names through sudo -n, like every mlc command).
function __fish_mlc_complete --description 'Ask mlc for completions'
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    set -l bin $words[1]
    string match -q -- 'mlc-?*' (basename -- $bin); and set bin (string replace -r -- '-[^-/]*$' '' $bin)
    $bin completion __complete -- $words "$cur" 2>/dev/null
end
complete -c mlc -f -n '__fish_seen_subcommand_from ` + strings.Join(dynamic, " ") + `' -a '(__fish_mlc_complete)'

# The mlc-COMMAND links.
`)
	for _, n := range names[1:] {
		fmt.Fprintf(&b, "complete -c %s -w 'mlc %s'\n", n, strings.TrimPrefix(n, "mlc-"))
	}
	return b.String(), nil
}
