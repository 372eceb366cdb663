from hybridcovid.evaluation import gradcam_examples


def test_explanation_examples_are_the_most_confident_of_each_outcome():
  rows = [{'key': f'k{index}', 'patient_id': patient, 'label': label,
           'probability': probability}
          for index, (patient, label, probability) in enumerate(
              [('a', 1, 0.9), ('b', 1, 0.6), ('c', 1, 0.99), ('d', 0, 0.7), ('e', 0, 0.1),
               ('f', 0, 0.35), ('g', 1, 0.2), ('c', 1, 0.95)])]
  chosen = gradcam_examples.explanation_examples(rows, threshold=0.3, per_outcome=2)
  # k7 is more confident than k0 but of a patient already shown.
  assert [(row['outcome'], row['key']) for row in chosen] == [
      ('true positive', 'k2'), ('true positive', 'k0'), ('false positive', 'k3'),
      ('false positive', 'k5'), ('true negative', 'k4'), ('false negative', 'k6')]
