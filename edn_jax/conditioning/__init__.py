"""What the generator sees beside the stick figure: the background plate, the exemplar, the face crop."""
