//! The migration dependency graph, built the way Django's MigrationLoader
//! builds it: internal then external dependencies, `__first__`/`__latest__`,
//! `run_before`, squash replacement depending on what is applied, and the
//! same plan order as `manage.py migrate`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use super::super::Problem;
use super::reader::{Key, MigrationFile};

const FIRST: &str = "__first__";
const LATEST: &str = "__latest__";

pub(crate) struct GraphInput<'a> {
    pub migrations: &'a [MigrationFile],
    /// Apps that have migrations in the project; dependencies on any other
    /// app (django.contrib.*, third-party) are external and tolerated.
    pub project_apps: &'a BTreeSet<String>,
    /// Migration files that exist but could not be read.
    pub unreadable: &'a BTreeMap<Key, PathBuf>,
    pub applied: &'a BTreeSet<Key>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlanEntry {
    /// Index into `GraphInput::migrations`.
    pub index: usize,
    pub previous: String,
    pub applied: bool,
    /// Set for a squash standing in for the migrations it replaces.
    pub replaces: Vec<Key>,
}

#[derive(Debug)]
pub(crate) struct Resolved {
    pub plan: Vec<PlanEntry>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GraphError {
    Cycle(Vec<Key>),
    /// (migration, the dependency it names that does not exist)
    Missing(Vec<(Key, Key)>),
}

#[derive(Debug, Default)]
struct Node {
    parents: BTreeSet<Key>,
    children: BTreeSet<Key>,
    /// None for a dummy: a node named by a dependency but not on disk.
    index: Option<usize>,
}

#[derive(Default)]
struct Graph {
    nodes: BTreeMap<Key, Node>,
    /// app -> (first root, first leaf); cleared when an intra-app edge appears.
    ends: HashMap<String, (Option<Key>, Option<Key>)>,
}

impl Graph {
    fn add_dependency(&mut self, child: &Key, parent: &Key) {
        self.nodes
            .entry(child.clone())
            .or_default()
            .parents
            .insert(parent.clone());
        self.nodes
            .entry(parent.clone())
            .or_default()
            .children
            .insert(child.clone());
        if child.0 == parent.0 {
            self.ends.clear();
        }
    }

    fn app_nodes<'a>(&'a self, app: &'a str) -> impl Iterator<Item = (&'a Key, &'a Node)> + 'a {
        self.nodes
            .range((app.to_string(), String::new())..)
            .take_while(move |(k, _)| k.0 == app)
            .filter(|(_, n)| n.index.is_some())
    }

    /// Django's `root_nodes(app)[0]` and `leaf_nodes(app)[0]`.
    fn ends(&mut self, app: &str) -> (Option<Key>, Option<Key>) {
        if let Some(e) = self.ends.get(app) {
            return e.clone();
        }
        let root = self
            .app_nodes(app)
            .find(|(_, n)| n.parents.iter().all(|p| p.0 != app))
            .map(|(k, _)| k.clone());
        let leaf = self
            .app_nodes(app)
            .find(|(_, n)| n.children.iter().all(|c| c.0 != app))
            .map(|(k, _)| k.clone());
        self.ends
            .insert(app.to_string(), (root.clone(), leaf.clone()));
        (root, leaf)
    }

    /// Django's `MigrationLoader.check_key`, except that names in apps
    /// outside the project resolve to nothing instead of failing.
    fn check_key(
        &mut self,
        key: &Key,
        current_app: &str,
        project_apps: &BTreeSet<String>,
    ) -> Option<Key> {
        if !project_apps.contains(&key.0) {
            return None;
        }
        let special = key.1 == FIRST || key.1 == LATEST;
        if !special || self.nodes.contains_key(key) {
            return Some(key.clone());
        }
        if key.0 == current_app {
            // Django ignores __first__ references to the same app (#22325).
            return None;
        }
        let (root, leaf) = self.ends(&key.0);
        if key.1 == FIRST { root } else { leaf }
    }

    fn remove_replaced_nodes(&mut self, replacement: &Key, replaced: &[Key]) {
        let replaced_set: BTreeSet<&Key> = replaced.iter().collect();
        for r in replaced {
            let Some(node) = self.nodes.remove(r) else {
                continue;
            };
            for child in node.children {
                if let Some(c) = self.nodes.get_mut(&child) {
                    c.parents.remove(r);
                }
                // No edges between replaced nodes and their replacement:
                // that would make the replacement depend on itself.
                if !replaced_set.contains(&child) && &child != replacement {
                    self.add_dependency(&child, replacement);
                }
            }
            for parent in node.parents {
                if let Some(p) = self.nodes.get_mut(&parent) {
                    p.children.remove(r);
                }
                if !replaced_set.contains(&parent) && &parent != replacement {
                    self.add_dependency(replacement, &parent);
                }
            }
        }
    }

    fn remove_replacement_node(&mut self, replacement: &Key, replaced: &[Key]) {
        let Some(node) = self.nodes.remove(replacement) else {
            return;
        };
        let present: BTreeSet<&Key> = replaced
            .iter()
            .filter(|k| self.nodes.contains_key(*k))
            .collect();
        let parents_of_replaced: BTreeSet<Key> = present
            .iter()
            .filter_map(|k| self.nodes.get(*k))
            .flat_map(|n| n.parents.iter().cloned())
            .collect();
        // Only the latest replaced nodes take over the squash's children.
        let latest: Vec<Key> = present
            .into_iter()
            .filter(|k| !parents_of_replaced.contains(*k))
            .cloned()
            .collect();
        for child in node.children {
            if let Some(c) = self.nodes.get_mut(&child) {
                c.parents.remove(replacement);
            }
            for l in &latest {
                self.add_dependency(&child, l);
            }
        }
        for parent in node.parents {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.children.remove(replacement);
            }
        }
    }

    fn find_cycle(&self) -> Option<Vec<Key>> {
        // 1 = on the DFS stack, 2 = finished
        let mut state: HashMap<&Key, u8> = HashMap::with_capacity(self.nodes.len());
        for start in self.nodes.keys() {
            if state.contains_key(start) {
                continue;
            }
            let Some(start_node) = self.nodes.get(start) else {
                continue;
            };
            let mut stack: Vec<(&Key, std::collections::btree_set::Iter<Key>)> = Vec::new();
            state.insert(start, 1);
            stack.push((start, start_node.parents.iter()));
            while let Some((key, iter)) = stack.last_mut() {
                let key: &Key = key;
                let next = iter.next();
                match next {
                    Some(parent) => match state.get(parent) {
                        Some(1) => {
                            let pos = stack.iter().position(|(k, _)| *k == parent).unwrap_or(0);
                            let mut cycle: Vec<Key> =
                                stack[pos..].iter().map(|(k, _)| (*k).clone()).collect();
                            // Children first reads as "a depends on b depends on ...".
                            cycle.push(parent.clone());
                            return Some(cycle);
                        }
                        Some(_) => {}
                        None => {
                            if let Some(n) = self.nodes.get(parent) {
                                state.insert(parent, 1);
                                stack.push((parent, n.parents.iter()));
                            }
                        }
                    },
                    None => {
                        state.insert(key, 2);
                        stack.pop();
                    }
                }
            }
        }
        None
    }
}

pub(crate) fn resolve(input: &GraphInput) -> Result<Resolved, GraphError> {
    let mut g = Graph::default();
    let mut problems = Vec::new();
    for (i, m) in input.migrations.iter().enumerate() {
        g.nodes.entry(m.key()).or_default().index = Some(i);
    }
    // Internal dependencies first, so __first__/__latest__ of other apps see
    // every app's own chain (as in Django's build_graph).
    for m in input.migrations {
        let key = m.key();
        for dep in &m.dependencies {
            if dep.0 == m.app && dep.1 != FIRST {
                g.add_dependency(&key, dep);
            }
        }
    }
    for m in input.migrations {
        let key = m.key();
        for dep in &m.dependencies {
            if dep.0 == m.app {
                continue;
            }
            if let Some(parent) = g.check_key(dep, &m.app, input.project_apps) {
                g.add_dependency(&key, &parent);
            }
        }
        for child in &m.run_before {
            if let Some(child) = g.check_key(child, &m.app, input.project_apps) {
                g.add_dependency(&child, &key);
            }
        }
    }

    let mut squash_applied: BTreeMap<Key, bool> = BTreeMap::new();
    let mut squash_used: BTreeMap<Key, Vec<Key>> = BTreeMap::new();
    for m in input.migrations.iter().filter(|m| !m.replaces.is_empty()) {
        let key = m.key();
        let statuses: Vec<bool> = m
            .replaces
            .iter()
            .map(|r| input.applied.contains(r))
            .collect();
        let all = statuses.iter().all(|s| *s);
        let none = !statuses.iter().any(|s| *s);
        // django_migrations may record the squash itself as well.
        let applied = input.applied.contains(&key) || all;
        squash_applied.insert(key.clone(), applied);
        if applied || none {
            g.remove_replaced_nodes(&key, &m.replaces);
            squash_used.insert(key, m.replaces.clone());
        } else {
            g.remove_replacement_node(&key, &m.replaces);
        }
    }

    let dummies: Vec<Key> = g
        .nodes
        .iter()
        .filter(|(_, n)| n.index.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    let mut missing = Vec::new();
    for d in dummies {
        let Some(node) = g.nodes.remove(&d) else {
            continue;
        };
        let referrers: BTreeSet<Key> = node.children.union(&node.parents).cloned().collect();
        for r in &referrers {
            if let Some(n) = g.nodes.get_mut(r) {
                n.parents.remove(&d);
                n.children.remove(&d);
            }
        }
        if let Some(path) = input.unreadable.get(&d) {
            for r in referrers {
                let file = g
                    .nodes
                    .get(&r)
                    .and_then(|n| n.index)
                    .and_then(|i| input.migrations.get(i))
                    .map(|m| m.path.clone())
                    .unwrap_or_default();
                problems.push(Problem {
                    file,
                    line: 0,
                    message: format!(
                        "{}.{} depends on {}.{}, which could not be read ({}); dependency ignored",
                        r.0,
                        r.1,
                        d.0,
                        d.1,
                        path.display()
                    ),
                });
            }
        } else {
            missing.extend(referrers.into_iter().map(|r| (r, d.clone())));
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(GraphError::Missing(missing));
    }
    if let Some(cycle) = g.find_cycle() {
        return Err(GraphError::Cycle(cycle));
    }

    // Plan like `migrate`: forwards_plan of each leaf node, in sorted order.
    let leaves: Vec<&Key> = g
        .nodes
        .iter()
        .filter(|(k, n)| n.children.iter().all(|c| c.0 != k.0))
        .map(|(k, _)| k)
        .collect();
    let mut visited: BTreeSet<&Key> = BTreeSet::new();
    let mut order: Vec<&Key> = Vec::with_capacity(g.nodes.len());
    for leaf in leaves {
        let mut stack = vec![(leaf, false)];
        while let Some((key, processed)) = stack.pop() {
            if visited.contains(key) {
                continue;
            }
            if processed {
                visited.insert(key);
                order.push(key);
            } else {
                stack.push((key, true));
                // Pushed ascending, popped descending: Django's iterative_dfs.
                if let Some(node) = g.nodes.get(key) {
                    stack.extend(node.parents.iter().map(|p| (p, false)));
                }
            }
        }
    }

    let plan = order
        .into_iter()
        .filter_map(|key| {
            let node = g.nodes.get(key)?;
            let index = node.index?;
            let previous = node
                .parents
                .iter()
                .find(|p| p.0 == key.0)
                .map(|p| p.1.clone())
                .unwrap_or_else(|| "zero".to_string());
            let applied = squash_applied
                .get(key)
                .copied()
                .unwrap_or_else(|| input.applied.contains(key));
            Some(PlanEntry {
                index,
                previous,
                applied,
                replaces: squash_used.get(key).cloned().unwrap_or_default(),
            })
        })
        .collect();
    Ok(Resolved { plan, problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(key: &str) -> Key {
        let (a, n) = key.split_once('.').unwrap_or((key, ""));
        (a.to_string(), n.to_string())
    }

    fn keys(list: &[&str]) -> Vec<Key> {
        list.iter().map(|s| k(s)).collect()
    }

    fn mig(key: &str, deps: &[&str]) -> MigrationFile {
        let (app, name) = k(key);
        MigrationFile {
            path: PathBuf::from(format!("{app}/migrations/{name}.py")),
            app,
            name,
            dependencies: keys(deps),
            replaces: Vec::new(),
            run_before: Vec::new(),
            initial: false,
            operations: Vec::new(),
        }
    }

    struct Case {
        migrations: Vec<MigrationFile>,
        unreadable: BTreeMap<Key, PathBuf>,
        applied: BTreeSet<Key>,
    }

    impl Case {
        fn new(migrations: Vec<MigrationFile>) -> Self {
            Case {
                migrations,
                unreadable: BTreeMap::new(),
                applied: BTreeSet::new(),
            }
        }

        fn applied(mut self, list: &[&str]) -> Self {
            self.applied = keys(list).into_iter().collect();
            self
        }

        fn resolve(&self) -> Result<Resolved, GraphError> {
            let mut apps: BTreeSet<String> =
                self.migrations.iter().map(|m| m.app.clone()).collect();
            apps.extend(self.unreadable.keys().map(|k| k.0.clone()));
            resolve(&GraphInput {
                migrations: &self.migrations,
                project_apps: &apps,
                unreadable: &self.unreadable,
                applied: &self.applied,
            })
        }

        fn order(&self) -> Vec<String> {
            let r = self.resolve().unwrap_or_else(|e| panic!("{e:?}"));
            r.plan
                .iter()
                .map(|e| {
                    let m = &self.migrations[e.index];
                    format!("{}{}.{}", if e.applied { "X" } else { "" }, m.app, m.name)
                })
                .collect()
        }
    }

    /// The project of Django 5.2's `showmigrations --plan` comparison: merges,
    /// run_before, __first__/__latest__, external apps and a squash.
    fn django_project() -> Vec<MigrationFile> {
        let mut c1 = mig("c.0001_initial", &[]);
        c1.run_before = keys(&["a.0002_y"]);
        let mut squash = mig("d.0001_squashed_0003_third", &[]);
        squash.replaces = keys(&["d.0001_initial", "d.0002_second", "d.0003_third"]);
        vec![
            mig(
                "a.0001_initial",
                &["auth.0012_alter_user_first_name_max_length"],
            ),
            mig("a.0002_x", &["a.0001_initial"]),
            mig("a.0002_y", &["a.0001_initial"]),
            mig("a.0003_merge", &["a.0002_y", "a.0002_x"]),
            mig("b.0001_initial", &["a.__first__", "contenttypes.__first__"]),
            mig("b.0002_second", &["b.0001_initial", "a.__latest__"]),
            mig("b.0003_third", &["b.0002_second", "c.0001_initial"]),
            c1,
            mig("c.0002_second", &["c.0001_initial", "b.__first__"]),
            mig("d.0001_initial", &[]),
            squash,
            mig("d.0002_second", &["d.0001_initial"]),
            mig("d.0003_third", &["d.0002_second"]),
            mig("d.0004_fourth", &["d.0003_third"]),
            mig("e.0001_initial", &["d.0002_second"]),
            mig("e.0002_second", &["e.0001_initial", "c.__latest__"]),
        ]
    }

    const DJANGO_PREFIX: [&str; 9] = [
        "c.0001_initial",
        "a.0001_initial",
        "a.0002_y",
        "a.0002_x",
        "a.0003_merge",
        "b.0001_initial",
        "b.0002_second",
        "b.0003_third",
        "c.0002_second",
    ];

    fn expected(rest: &[&str]) -> Vec<String> {
        DJANGO_PREFIX
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn plan_matches_django_with_nothing_applied() {
        let case = Case::new(django_project());
        assert_eq!(
            case.order(),
            expected(&[
                "d.0001_squashed_0003_third",
                "d.0004_fourth",
                "e.0001_initial",
                "e.0002_second"
            ])
        );
    }

    #[test]
    fn plan_matches_django_with_squash_partially_applied() {
        let case = Case::new(django_project()).applied(&["d.0001_initial"]);
        assert_eq!(
            case.order(),
            expected(&[
                "Xd.0001_initial",
                "d.0002_second",
                "d.0003_third",
                "d.0004_fourth",
                "e.0001_initial",
                "e.0002_second"
            ])
        );
    }

    #[test]
    fn plan_matches_django_with_squash_fully_applied() {
        let case = Case::new(django_project()).applied(&[
            "d.0001_initial",
            "d.0002_second",
            "d.0003_third",
        ]);
        let order = case.order();
        assert_eq!(
            order,
            expected(&[
                "Xd.0001_squashed_0003_third",
                "d.0004_fourth",
                "e.0001_initial",
                "e.0002_second"
            ])
        );
        // e.0001 depended on the replaced d.0002: it now hangs off the squash.
        let r = case.resolve().unwrap_or_else(|e| panic!("{e:?}"));
        let squash = r
            .plan
            .iter()
            .find(|e| case.migrations[e.index].name == "0001_squashed_0003_third");
        assert_eq!(squash.map(|s| s.replaces.len()), Some(3));
    }

    #[test]
    fn squash_recorded_by_itself_counts_as_applied() {
        let case = Case::new(django_project()).applied(&["d.0001_squashed_0003_third"]);
        assert!(
            case.order()
                .contains(&"Xd.0001_squashed_0003_third".to_string())
        );
    }

    #[test]
    fn squash_stands_in_for_deleted_replaced_files() {
        let mut squash = mig("d.0001_squashed_0002", &[]);
        squash.replaces = keys(&["d.0001_initial", "d.0002_second"]);
        let case = Case::new(vec![
            squash,
            mig("d.0003_third", &["d.0002_second"]),
            mig("e.0001_initial", &["d.0001_initial"]),
        ]);
        assert_eq!(
            case.order(),
            ["d.0001_squashed_0002", "d.0003_third", "e.0001_initial"]
        );
    }

    #[test]
    fn previous_is_first_same_app_parent_or_zero() {
        let case = Case::new(django_project());
        let r = case.resolve().unwrap_or_else(|e| panic!("{e:?}"));
        let prev: BTreeMap<String, String> = r
            .plan
            .iter()
            .map(|e| {
                let m = &case.migrations[e.index];
                (format!("{}.{}", m.app, m.name), e.previous.clone())
            })
            .collect();
        assert_eq!(prev["a.0001_initial"], "zero");
        assert_eq!(prev["a.0003_merge"], "0002_x");
        assert_eq!(prev["b.0003_third"], "0002_second");
        assert_eq!(prev["d.0001_squashed_0003_third"], "zero");
        assert_eq!(prev["d.0004_fourth"], "0001_squashed_0003_third");
    }

    #[test]
    fn first_and_latest_resolve_to_root_and_leaf() {
        let case = Case::new(vec![
            mig("a.0001_initial", &[]),
            mig("a.0002_more", &["a.0001_initial"]),
            mig("b.0001_initial", &["a.__latest__"]),
            mig("c.0001_initial", &["a.__first__", "c.__first__"]),
        ]);
        let r = case.resolve().unwrap_or_else(|e| panic!("{e:?}"));
        let pos = |name: &str| {
            r.plan.iter().position(|e| {
                format!(
                    "{}.{}",
                    case.migrations[e.index].app, case.migrations[e.index].name
                ) == name
            })
        };
        assert!(pos("a.0002_more") < pos("b.0001_initial"));
        assert!(pos("a.0001_initial") < pos("c.0001_initial"));
    }

    #[test]
    fn run_before_adds_the_reverse_edge() {
        let mut late = mig("z.0001_initial", &[]);
        late.run_before = keys(&["a.0001_initial"]);
        let case = Case::new(vec![mig("a.0001_initial", &[]), late]);
        assert_eq!(case.order(), ["z.0001_initial", "a.0001_initial"]);
    }

    #[test]
    fn external_apps_are_tolerated() {
        let case = Case::new(vec![mig(
            "shop.0001_initial",
            &[
                "auth.0012_alter_user_first_name_max_length",
                "contenttypes.__first__",
                "sites.__latest__",
            ],
        )]);
        assert_eq!(case.order(), ["shop.0001_initial"]);
    }

    #[test]
    fn missing_dependency_names_both_migrations() {
        let case = Case::new(vec![
            mig("shop.0001_initial", &[]),
            mig("shop.0003_third", &["shop.0002_gone"]),
            mig("other.0001_initial", &["shop.0009_nope"]),
        ]);
        assert_eq!(
            case.resolve().err(),
            Some(GraphError::Missing(vec![
                (k("other.0001_initial"), k("shop.0009_nope")),
                (k("shop.0003_third"), k("shop.0002_gone")),
            ]))
        );
    }

    #[test]
    fn cycle_names_its_members() {
        let case = Case::new(vec![
            mig("a.0001_initial", &["b.0001_initial"]),
            mig("b.0001_initial", &["c.0001_initial"]),
            mig("c.0001_initial", &["a.0001_initial"]),
            mig("d.0001_initial", &[]),
        ]);
        let Err(GraphError::Cycle(cycle)) = case.resolve() else {
            panic!("no cycle found")
        };
        assert_eq!(
            cycle,
            keys(&[
                "a.0001_initial",
                "b.0001_initial",
                "c.0001_initial",
                "a.0001_initial"
            ])
        );
    }

    #[test]
    fn dependency_on_unreadable_file_is_a_problem_not_an_error() {
        let mut case = Case::new(vec![
            mig("shop.0001_initial", &[]),
            mig("shop.0003_third", &["shop.0002_broken"]),
        ]);
        case.unreadable.insert(
            k("shop.0002_broken"),
            PathBuf::from("shop/migrations/0002_broken.py"),
        );
        let r = case.resolve().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.plan.len(), 2);
        assert_eq!(r.problems.len(), 1);
        assert!(
            r.problems[0].message.contains("shop.0002_broken"),
            "{:?}",
            r.problems
        );
        assert_eq!(
            r.problems[0].file,
            PathBuf::from("shop/migrations/0003_third.py")
        );
    }

    #[test]
    fn partially_applied_squash_hands_its_children_to_the_latest_replaced() {
        let mut squash = mig("d.0001_squashed_0002", &[]);
        squash.replaces = keys(&["d.0001_initial", "d.0002_second"]);
        let case = Case::new(vec![
            mig("d.0001_initial", &[]),
            squash,
            mig("d.0002_second", &["d.0001_initial"]),
            mig("e.0001_initial", &["d.0001_squashed_0002"]),
        ])
        .applied(&["d.0001_initial"]);
        assert_eq!(
            case.order(),
            ["Xd.0001_initial", "d.0002_second", "e.0001_initial"]
        );
    }
}
